//! Notebook-grade sessions: streamed output, display(), files, reset, history and the .ipynb
//! export, against a real server.

mod common;

use std::time::Duration;

use common::{Api, shared_with};
use futures::StreamExt;
use serde_json::{Value, json};

const CONFIG: &str =
    "[pool]\nwarm_workers = 2\n\n[files]\nmax_bytes = 1048576\nmax_total_bytes = 3145728\n";

fn api() -> Api {
    Api::new(shared_with(CONFIG))
}

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    event: String,
    data: Value,
}

/// The SSE events of `response`, each sent as it arrives (a task reads the stream).
fn events(response: reqwest::Response) -> tokio::sync::mpsc::UnboundedReceiver<Sse> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue; // keep-alive comment
                }
                let sse = Sse {
                    event,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                };
                if tx.send(sse).is_err() {
                    return; // the test has what it wanted
                }
            }
        }
    });
    rx
}

/// Reads SSE events until `stop_after` of them arrived, or the stream ended.
async fn read_events(response: reqwest::Response, stop_after: Option<usize>) -> Vec<Sse> {
    let mut rx = events(response);
    let mut events = Vec::new();
    while let Some(sse) = rx.recv().await {
        events.push(sse);
        if stop_after == Some(events.len()) {
            break;
        }
    }
    events
}

async fn stream(api: &Api, session: &str, code: &str) -> reqwest::Response {
    let response = api
        .http
        .post(api.url(&format!("/v1/sessions/{session}/execute?stream=true")))
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/event-stream"
    );
    response
}

#[tokio::test]
async fn output_streams_while_the_cell_runs() {
    let api = api();
    let s = api.session().await;
    let (blocker, hold) = common::blocker().await;
    let code = format!(
        "for i in range(5):\n    print('line', i)\n{hold}\nfor i in range(5, 10):\n    print('line', i)"
    );
    let mut rx = events(stream(&api, &s, &code).await);
    // The first line arrives while the cell is held: output streams before the cell ends.
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no output while the cell was held: it did not stream")
        .expect("a first event");
    assert_eq!(
        (first.event.as_str(), &first.data["name"]),
        ("stream", &json!("stdout"))
    );
    let held = tokio::time::timeout(Duration::from_secs(30), blocker.accept())
        .await
        .expect("the cell is still running, held");
    drop(held);
    let mut events = vec![first];
    while let Some(sse) = rx.recv().await {
        events.push(sse);
    }
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last.event, "result");
    assert!(rest.iter().all(|e| e.event == "stream"), "{events:?}");
    let streamed: String = rest
        .iter()
        .map(|e| e.data["text"].as_str().expect("text"))
        .collect();
    let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
    assert_eq!(streamed, expected);

    // The result is the non-streaming reply, field for field.
    let result = common::without_duration(last.data.clone());
    assert_eq!(result, common::ok_reply(1, json!({"stdout": expected})));
    let plain = api.run(&s, "None").await;
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&result), keys(&plain));
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_stop_the_cell() {
    let api = api();
    let s = api.session().await;
    let code =
        "import time\nfor i in range(5):\n    print(i)\n    time.sleep(0.1)\nfinished = 'yes'";
    let events = read_events(stream(&api, &s, code).await, Some(1)).await;
    assert_eq!(events[0].event, "stream");
    // The response is dropped here, mid-cell. The next execution queues behind the cell.
    let reply = api.run(&s, "finished").await;
    assert_eq!(reply["result"]["text/plain"], "'yes'", "{reply}");
    assert_eq!(reply["execution_count"], 2);
}

#[tokio::test]
async fn display_sends_bundles_in_order() {
    let api = api();
    let s = api.session().await;
    let code = "df = pd.DataFrame({'a': [1, 2]})\nfig = plt.figure()\nplt.plot([1, 2])\ndisplay(df)\ndisplay(fig)\nprint('after')";
    let reply = api.run(&s, code).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let display = reply["display"].as_array().expect("display");
    assert_eq!(
        display.len(),
        2,
        "the figure shown is closed, not shown again: {reply}"
    );
    assert!(
        display[0]["text/html"]
            .as_str()
            .expect("html")
            .contains("<table")
    );
    assert!(display[0].get("image/png").is_none());
    assert!(display[1]["image/png"].is_string());
    assert!(display[1].get("text/html").is_none());

    // Streamed, the bundles come as events, in order with the output.
    let code = "print('before')\ndisplay(df)\nplt.plot([3, 4])\nplt.show()\nprint('after')";
    let events = read_events(stream(&api, &s, code).await, None).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["stream", "display", "display", "stream", "result"],
        "{events:?}"
    );
    assert_eq!(events[0].data["text"], "before\n");
    assert!(events[1].data["text/html"].is_string());
    assert!(events[2].data["image/png"].is_string());
    assert_eq!(events[4].data["display"].as_array().map(Vec::len), Some(2));
}

async fn put(api: &Api, session: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    api.put_file(session, path, body).await
}

#[tokio::test]
async fn files_go_in_and_out_and_cannot_escape() {
    let api = api();
    let s = api.session().await;
    let csv = b"k,v\na,1\nb,2\na,3\n".to_vec();
    assert_eq!(put(&api, &s, "data/in.csv", csv).await.0, 204);
    let reply = api
        .run(
            &s,
            "df = pd.read_csv('data/in.csv')\nout = df.groupby('k')['v'].sum()\nout.to_csv('out.csv')\nint(out['a'])",
        )
        .await;
    assert_eq!(reply["result"]["text/plain"], "4", "{reply}");
    let response = api
        .http
        .get(api.url(&format!("/v1/sessions/{s}/files/out.csv")))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv");
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        b"k,v\na,4\nb,2\n"
    );

    let (status, list) = api.get(&format!("/v1/sessions/{s}/files")).await;
    assert_eq!(status, 200);
    let paths: Vec<&str> = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["data/in.csv", "out.csv"]);

    for (path, code) in [
        ("..%2Fx", "invalid_path"),
        ("%2Fetc%2Fpasswd", "invalid_path"),
        ("a/..%2F..%2Fx", "invalid_path"),
    ] {
        let (status, body) = put(&api, &s, path, b"x".to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
        let (status, body) = api.get(&format!("/v1/sessions/{s}/files/{path}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    api.run(&s, "import os\nos.symlink('/etc', 'etc')").await;
    let (status, body) = api.get(&format!("/v1/sessions/{s}/files/etc/passwd")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    let (status, body) = put(&api, &s, "etc/evil", b"x".to_vec()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );

    let (status, body) = put(&api, &s, "big.bin", vec![0; (1 << 20) + 1]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("file_too_large"))
    );
    for i in 0..2 {
        assert_eq!(
            put(&api, &s, &format!("part{i}"), vec![0; 1 << 20]).await.0,
            204
        );
    }
    let (status, body) = put(&api, &s, "part2", vec![0; 1 << 20]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (507, Some("quota_exceeded"))
    );

    assert_eq!(
        api.delete(&format!("/v1/sessions/{s}/files/part0")).await,
        204
    );
    let (status, body) = api.get(&format!("/v1/sessions/{s}/files/part0")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("file_not_found"))
    );
}

#[tokio::test]
async fn reset_forgets_variables_but_keeps_files() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "x = 1\nopen('kept.txt', 'w').write('kept')")
        .await;
    let (status, info) = api
        .post(&format!("/v1/sessions/{s}/reset"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["session_id"], s.as_str());
    let reply = api
        .run(&s, "'x' in globals(), open('kept.txt').read(), np.__name__")
        .await;
    assert_eq!(
        reply["result"]["text/plain"], "(False, 'kept', 'numpy')",
        "{reply}"
    );
    assert_eq!(reply["session_reset"], false, "the client asked for it");
}

#[tokio::test]
async fn history_exports_as_a_valid_notebook() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "x = 21\nprint('hello')").await;
    api.run(&s, "x * 2").await;
    api.run(&s, "plt.plot([1, 2, 3]);").await;
    api.run(&s, "1 / 0").await;

    let (status, history) = api.get(&format!("/v1/sessions/{s}/history")).await;
    assert_eq!(status, 200);
    let history = history["history"].as_array().expect("history");
    assert_eq!(history.len(), 4);
    assert_eq!(history[1]["code"], "x * 2");
    assert_eq!(history[1]["result"]["text/plain"], "42");
    assert_eq!(history[3]["status"], "error");

    let (status, notebook) = api.get(&format!("/v1/sessions/{s}/notebook")).await;
    assert_eq!(status, 200);
    let cells = notebook["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4);
    let output_types = |i: usize| -> Vec<&str> {
        cells[i]["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|o| o["output_type"].as_str().expect("type"))
            .collect()
    };
    assert_eq!(output_types(0), ["stream"]);
    assert_eq!(output_types(1), ["execute_result"]);
    assert_eq!(output_types(2), ["display_data"]);
    assert_eq!(output_types(3), ["error"]);
    // What kind of failure a cell was goes with it, in the cell's metadata (nbformat's error
    // output has none); a cell that ended well has none.
    assert_eq!(history[3]["category"], "runtime");
    assert_eq!(cells[3]["metadata"]["replpool"]["category"], "runtime");
    assert_eq!(cells[1]["metadata"]["replpool"].get("category"), None);

    // The official schema and reader accept it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.ipynb");
    std::fs::write(&path, notebook.to_string()).expect("write");
    let output = std::process::Command::new(common::python())
        .args([
            "-c",
            "import nbformat, sys\nnb = nbformat.read(sys.argv[1], as_version=4)\nnbformat.validate(nb)\nprint(len(nb.cells), nb.cells[1].outputs[0].data['text/plain'])",
        ])
        .arg(&path)
        .output()
        .expect("run nbformat");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "4 42");
}
