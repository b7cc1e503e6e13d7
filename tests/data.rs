//! Data beside pictures (issue 21 §3): a DataFrame's or Series' rows as pandas' Table Schema
//! resource, a figure's chart as data, `"data": false`, and the paths the bundles take
//! (reply, SSE, history, the notebook export, one-shots), against a real server.

mod common;

use common::{Api, Server, shared_with};
use serde_json::{Value, json};

const TABLE: &str = "application/vnd.dataresource+json";
const CHART: &str = "application/vnd.replpool.chart+json";

/// Tables and series cut at 5 rows, so that truncation is cheap to reach.
const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n[execution]\nmax_table_rows = 5\n";

fn api() -> Api {
    Api::new(shared_with(CONFIG))
}

async fn ok(api: &Api, session: &str, code: &str) -> Value {
    let reply = api.run(session, code).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    reply
}

/// The one chart of the only figure a cell displayed.
async fn chart_of(api: &Api, code: &str) -> Value {
    let session = api.session().await;
    let reply = ok(api, &session, code).await;
    let display = reply["display"].as_array().expect("display");
    assert_eq!(display.len(), 1, "{reply}");
    assert!(display[0]["image/png"].is_string(), "the picture stays");
    let chart = &display[0][CHART];
    assert!(chart.is_object(), "a JSON value, not a string: {chart}");
    let charts = chart["charts"].as_array().expect("charts");
    assert_eq!(charts.len(), 1, "{chart}");
    charts[0].clone()
}

/// A JSON value as a Python string literal (a JSON string is one).
fn py_str(value: &Value) -> String {
    serde_json::to_string(&value.to_string()).expect("a string")
}

#[tokio::test]
async fn a_dataframe_result_carries_the_table_pandas_makes_and_reads_back() {
    let api = api();
    let session = api.session().await;
    let reply = ok(
        &api,
        &session,
        "df = pd.DataFrame({'n': [1, 2, 3], 's': ['a', 'b', None], 'f': [0.5, float('nan'), 2.0],\n\
         \x20                  't': pd.to_datetime(['2024-01-01', '2024-01-02', '2024-01-03'])})\ndf",
    )
    .await;
    let result = &reply["result"];
    assert!(result["text/html"].is_string(), "the HTML repr stays");
    let mut table = result[TABLE].clone();
    assert!(table.is_object(), "a JSON value, not a string: {table}");
    assert_eq!(table["truncated"], false);
    assert_eq!(table["total_rows"], 3);
    assert_eq!(table["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(table["data"][1]["f"], Value::Null, "NaN is null");

    // Beside our two keys, exactly what pandas' own to_json(orient="table") says.
    let pandas = ok(&api, &session, "print(df.to_json(orient='table'))").await;
    let pandas: Value = serde_json::from_str(pandas["stdout"].as_str().expect("stdout"))
        .expect("pandas wrote JSON");
    let object = table.as_object_mut().expect("object");
    object.remove("truncated");
    object.remove("total_rows");
    assert_eq!(table, pandas);

    // And pandas reads it back as the same frame.
    let back = ok(
        &api,
        &session,
        &format!(
            "import io\nback = pd.read_json(io.StringIO({}), orient='table')\n\
             pd.testing.assert_frame_equal(back, df, check_dtype=False)\nprint('same')",
            py_str(&table)
        ),
    )
    .await;
    assert_eq!(back["stdout"], "same\n", "{back}");
}

#[tokio::test]
async fn a_table_over_max_table_rows_is_cut_and_says_so() {
    let api = api();
    let session = api.session().await;
    let reply = ok(&api, &session, "pd.DataFrame({'x': range(12)})").await;
    let table = &reply["result"][TABLE];
    assert_eq!(table["truncated"], true, "{table}");
    assert_eq!(table["total_rows"], 12);
    let rows: Vec<i64> = table["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|row| row["x"].as_i64().expect("x"))
        .collect();
    assert_eq!(rows, [0, 1, 2, 3, 4], "the first max_table_rows rows");

    let exact = ok(&api, &session, "pd.DataFrame({'x': range(5)})").await;
    assert_eq!(exact["result"][TABLE]["truncated"], false);
    assert_eq!(exact["result"][TABLE]["total_rows"], 5);
}

#[tokio::test]
async fn a_series_and_a_displayed_frame_carry_their_tables() {
    let api = api();
    let session = api.session().await;
    let reply = ok(&api, &session, "pd.Series([1.5, 2.5], name='v')").await;
    let table = &reply["result"][TABLE];
    let fields: Vec<&str> = table["schema"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(fields, ["index", "v"]);
    assert_eq!(
        table["data"],
        json!([{"index": 0, "v": 1.5}, {"index": 1, "v": 2.5}])
    );

    let shown = ok(
        &api,
        &session,
        "display(pd.DataFrame({'a': [1]}))\ndisplay(42)",
    )
    .await;
    let display = shown["display"].as_array().expect("display");
    assert_eq!(display.len(), 2);
    assert_eq!(display[0][TABLE]["data"], json!([{"index": 0, "a": 1}]));
    assert_eq!(
        display[1].get(TABLE),
        None,
        "only pandas objects have a table"
    );
}

#[tokio::test]
async fn a_line_chart_has_its_title_labels_scales_and_points() {
    let api = api();
    let chart = chart_of(
        &api,
        "plt.plot([1, 2, 3], [10, 20, 15], label='sales')\nplt.plot([1, 2], [1, 1])\n\
         plt.title('Sales'); plt.xlabel('day'); plt.ylabel('units'); plt.yscale('log')",
    )
    .await;
    assert_eq!(chart["type"], "line");
    assert_eq!(chart["title"], "Sales");
    assert_eq!(chart["x_label"], "day");
    assert_eq!(chart["y_label"], "units");
    assert_eq!(chart["x_scale"], "linear");
    assert_eq!(chart["y_scale"], "log");
    assert_eq!(chart["truncated"], false);
    assert_eq!(
        chart["elements"],
        json!([
            {"label": "sales", "points": [[1.0, 10.0], [2.0, 20.0], [3.0, 15.0]]},
            {"label": null, "points": [[1.0, 1.0], [2.0, 1.0]]},
        ])
    );
}

#[tokio::test]
async fn a_series_over_max_table_rows_is_cut_and_says_so() {
    let api = api();
    let session = api.session().await;
    let reply = ok(&api, &session, "plt.plot(range(12))").await;
    let chart = &reply["display"][0][CHART];
    assert_eq!(chart["truncated"], true, "{chart}");
    assert_eq!(chart["charts"][0]["truncated"], true);
    assert_eq!(
        chart["charts"][0]["elements"][0]["points"],
        json!([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    );
}

#[tokio::test]
async fn a_scatter_chart_has_its_points_and_nan_is_null() {
    let api = api();
    let chart = chart_of(
        &api,
        "plt.scatter([1, 2, 3], [4, float('nan'), 6], label='obs')\nplt.title('Scatter')",
    )
    .await;
    assert_eq!(chart["type"], "scatter");
    assert_eq!(chart["title"], "Scatter");
    assert_eq!(
        chart["elements"],
        json!([{"label": "obs", "points": [[1.0, 4.0], [2.0, null], [3.0, 6.0]]}])
    );
}

#[tokio::test]
async fn a_bar_chart_has_its_categories_and_values() {
    let api = api();
    let chart = chart_of(
        &api,
        "plt.bar(['north', 'south'], [3, 5], label='2025')\nplt.xlabel('region')\nplt.title('Bars')",
    )
    .await;
    assert_eq!(chart["type"], "bar");
    assert_eq!(chart["title"], "Bars");
    assert_eq!(chart["x_label"], "region");
    assert_eq!(chart["x_scale"], "categorical");
    assert_eq!(
        chart["elements"],
        json!([
            {"group": "2025", "label": "north", "value": 3.0},
            {"group": "2025", "label": "south", "value": 5.0},
        ])
    );
    let horizontal = chart_of(&api, "plt.barh(['a', 'b'], [1, 2])").await;
    assert_eq!(horizontal["type"], "bar");
    assert_eq!(
        horizontal["elements"],
        json!([
            {"group": null, "label": "a", "value": 1.0},
            {"group": null, "label": "b", "value": 2.0},
        ])
    );
}

#[tokio::test]
async fn a_pie_chart_has_its_wedges_as_fractions() {
    let api = api();
    let chart = chart_of(
        &api,
        "plt.pie([1, 3], labels=['cats', 'dogs'])\nplt.title('Pets')",
    )
    .await;
    assert_eq!(chart["type"], "pie");
    assert_eq!(chart["title"], "Pets");
    assert_eq!(
        chart["elements"],
        json!([
            {"label": "cats", "fraction": 0.25},
            {"label": "dogs", "fraction": 0.75},
        ])
    );
}

#[tokio::test]
async fn a_box_plot_has_its_statistics() {
    let api = api();
    let chart = chart_of(
        &api,
        "plt.boxplot([[1, 2, 3, 4, 5, 100], [2, 3, 4]], tick_labels=['a', 'b'])\nplt.ylabel('ms')",
    )
    .await;
    assert_eq!(chart["type"], "box");
    assert_eq!(chart["y_label"], "ms");
    assert_eq!(
        chart["elements"],
        json!([
            {"label": "a", "min": 1.0, "q1": 2.25, "median": 3.5, "q3": 4.75, "max": 5.0,
             "outliers": [100.0]},
            {"label": "b", "min": 2.0, "q1": 2.5, "median": 3.0, "q3": 3.5, "max": 4.0,
             "outliers": []},
        ])
    );
}

#[tokio::test]
async fn an_image_is_an_unknown_chart_with_its_title() {
    let api = api();
    let chart = chart_of(
        &api,
        "plt.imshow(np.zeros((4, 4)))\nplt.colorbar()\nplt.title('Heat')",
    )
    .await;
    assert_eq!(chart["type"], "unknown");
    assert_eq!(chart["title"], "Heat");
    assert_eq!(chart["elements"], json!([]));
}

#[tokio::test]
async fn subplots_are_one_chart_each_under_the_figure_title() {
    let api = api();
    let session = api.session().await;
    let reply = ok(
        &api,
        &session,
        "fig, (a, b) = plt.subplots(1, 2)\na.plot([1, 2])\nb.scatter([1], [2])\nfig.suptitle('Both')\nfig",
    )
    .await;
    // The figure as the value: its bundle is the result.
    let chart = &reply["result"][CHART];
    assert_eq!(chart["title"], "Both");
    let types: Vec<&str> = chart["charts"]
        .as_array()
        .expect("charts")
        .iter()
        .map(|c| c["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["line", "scatter"]);
}

#[tokio::test]
async fn data_false_leaves_tables_and_charts_out_on_every_execute_route() {
    let api = api();
    let session = api.session().await;
    let code = "plt.plot([1, 2])\ndisplay(pd.DataFrame({'a': [1]}))\npd.Series([1])";
    let reply = api
        .exec(&session, json!({"code": code, "data": false}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let display = reply["display"].as_array().expect("display");
    assert_eq!(display.len(), 2, "{reply}");
    assert!(display[0]["text/html"].is_string());
    assert_eq!(display[0].get(TABLE), None);
    assert!(display[1]["image/png"].is_string());
    assert_eq!(display[1].get(CHART), None);
    assert_eq!(reply["result"].get(TABLE), None);
    assert!(reply["result"]["text/plain"].is_string());

    // The same cell with data on (the default) has both: the flag is what left them out.
    let on = ok(&api, &session, code).await;
    assert!(on["display"][0][TABLE].is_object());
    assert!(on["display"][1][CHART].is_object());
    assert!(on["result"][TABLE].is_object());

    let (status, once) = api
        .post("/v1/execute", json!({"code": code, "data": false}))
        .await;
    assert_eq!(status, 200, "{once}");
    assert_eq!(once["result"].get(TABLE), None);
    assert_eq!(once["display"][1].get(CHART), None);
    let (status, once) = api.post("/v1/execute", json!({"code": code})).await;
    assert_eq!(status, 200, "{once}");
    assert!(once["result"][TABLE].is_object());
    assert!(once["display"][1][CHART].is_object());

    for (data, present) in [(json!(false), false), (json!(true), true)] {
        let events = sse(
            &api,
            &session,
            json!({"code": "plt.plot([1, 2])", "data": data}),
        )
        .await;
        let displays: Vec<&Value> = events
            .iter()
            .filter(|(event, _)| event == "display")
            .map(|(_, data)| data)
            .collect();
        assert_eq!(displays.len(), 1, "{events:?}");
        assert_eq!(displays[0].get(CHART).is_some(), present, "{events:?}");
        let result = events
            .iter()
            .find(|(event, _)| event == "result")
            .expect("a result event");
        assert_eq!(result.1["status"], "ok");
    }
}

/// The events of an SSE execute, read to the end of the stream.
async fn sse(api: &Api, session: &str, body: Value) -> Vec<(String, Value)> {
    let response = api
        .http
        .post(api.url(&format!("/v1/sessions/{session}/execute?stream=true")))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("the stream");
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some((
                event?,
                serde_json::from_str(&data).expect("event data is JSON"),
            ))
        })
        .collect()
}

#[tokio::test]
async fn history_and_the_notebook_keep_the_data_as_json_values() {
    let api = api();
    let session = api.session().await;
    ok(&api, &session, "pd.DataFrame({'a': [1, 2]})").await;
    ok(&api, &session, "plt.bar(['x'], [2])").await;

    let (status, history) = api.get(&format!("/v1/sessions/{session}/history")).await;
    assert_eq!(status, 200);
    let history = history["history"].as_array().expect("history");
    assert!(history[0]["result"][TABLE].is_object(), "{history:?}");
    assert!(history[1]["display"][0][CHART].is_object(), "{history:?}");

    let (status, notebook) = api.get(&format!("/v1/sessions/{session}/notebook")).await;
    assert_eq!(status, 200);
    let cells = notebook["cells"].as_array().expect("cells");
    assert_eq!(
        cells[0]["outputs"][0]["data"][TABLE]["data"],
        json!([{"index": 0, "a": 1}, {"index": 1, "a": 2}])
    );
    assert_eq!(
        cells[1]["outputs"][0]["data"][CHART]["charts"][0]["type"],
        "bar"
    );

    // The official schema and reader take the JSON values as they are.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.ipynb");
    std::fs::write(&path, notebook.to_string()).expect("write");
    let output = std::process::Command::new(common::python())
        .args([
            "-c",
            "import nbformat, sys\nnb = nbformat.read(sys.argv[1], as_version=4)\nnbformat.validate(nb)\n\
             t = nb.cells[0].outputs[0].data[sys.argv[2]]\nc = nb.cells[1].outputs[0].data[sys.argv[3]]\n\
             print(len(t['data']), c['charts'][0]['elements'][0]['label'])",
        ])
        .arg(&path)
        .args([TABLE, CHART])
        .output()
        .expect("run nbformat");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "2 x");
}

#[tokio::test]
async fn a_table_too_large_for_the_frame_is_cut_further_not_lost() {
    // A frame of 256 KiB: a table's JSON may take a quarter of it.
    let server = Server::start(
        "[pool]\nwarm_workers = 1\n\n[execution]\nmax_output_bytes = 65536\nmax_code_bytes = 65536\nmax_frame_bytes = 262144\n",
    );
    let api = Api::new(&server.base);
    let session = api.session().await;
    let reply = ok(
        &api,
        &session,
        "df = pd.DataFrame({'s': ['x' * 30000] * 8})\ndisplay(df)\ndf",
    )
    .await;
    for bundle in [&reply["result"], &reply["display"][0]] {
        let table = &bundle[TABLE];
        let rows = table["data"].as_array().expect("some rows").len();
        assert!((1..8).contains(&rows), "{rows} rows");
        assert_eq!(table["truncated"], true);
        assert_eq!(table["total_rows"], 8);
    }
    assert_eq!(reply["truncated"], false, "nothing else was cut");
}
