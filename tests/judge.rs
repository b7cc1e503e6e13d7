//! The code judge's `POST /execute`, with the payloads of the judge server's own tests.

mod common;

use common::{Api, shared_with};
use serde_json::{Value, json};

const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n[judge]\nrun_timeout_ms = 2000\n";

async fn judge(payload: Value) -> Value {
    let api = Api::new(shared_with(CONFIG));
    let (status, body) = api.post("/execute", payload).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn assert_all_passed(body: &Value, cases: usize) {
    assert_eq!(body["all_passed"], true, "{body}");
    assert_eq!(body["compile_output"]["passed"], true);
    let outputs = body["exec_outputs"].as_array().expect("exec_outputs");
    assert_eq!(outputs.len(), cases);
    for output in outputs {
        assert_eq!(output["passed"], true, "{output}");
        assert_eq!(output["timed_out"], false);
        assert!(output["time_seconds"].as_f64().expect("time") >= 0.0);
    }
}

#[tokio::test]
async fn hello_world() {
    let body = judge(json!({
        "code": "\nname = input()\nprint(f\"Hello, {name}!\")\n        ",
        "stdin_stdout": [
            {"stdin": "World", "stdout": "Hello, World!"},
            {"stdin": "CodeContests", "stdout": "Hello, CodeContests!"},
        ],
        "language": "python",
    }))
    .await;
    assert_all_passed(&body, 2);
    assert_eq!(body["exec_outputs"][0]["stdout"], "Hello, World!\n");
    assert_eq!(
        body["compile_output"],
        json!({"passed": true, "stdout": "", "stderr": "", "time_seconds": 0.0, "timed_out": false})
    );
}

#[tokio::test]
async fn sum_of_two_numbers() {
    let body = judge(json!({
        "code": "\na, b = map(int, input().split())\nprint(a + b)\n        ",
        "stdin_stdout": [
            {"stdin": "5 7", "stdout": "12"},
            {"stdin": "10 -3", "stdout": "7"},
            {"stdin": "0 0", "stdout": "0"},
        ],
        "language": "python",
    }))
    .await;
    assert_all_passed(&body, 3);
}

#[tokio::test]
async fn prime_check_with_one_wrong_expectation() {
    let code = "\ndef is_prime(n):\n    if n <= 1:\n        return False\n    if n <= 3:\n        return True\n    if n % 2 == 0 or n % 3 == 0:\n        return False\n    i = 5\n    while i * i <= n:\n        if n % i == 0 or n % (i + 2) == 0:\n            return False\n        i += 6\n    return True\n\nn = int(input())\nif is_prime(n):\n    print(\"YES\")\nelse:\n    print(\"NO\")\n        ";
    let body = judge(json!({
        "code": code,
        "stdin_stdout": [
            {"stdin": "7", "stdout": "YES"},
            {"stdin": "15", "stdout": "NO"},
            {"stdin": "23", "stdout": "YES"},
            {"stdin": "4", "stdout": "NO"},
        ],
        "language": "python",
    }))
    .await;
    assert_all_passed(&body, 4);
    let body = judge(json!({
        "code": code,
        "stdin_stdout": [{"stdin": "7", "stdout": "YES"}, {"stdin": "9", "stdout": "YES"}],
        "language": "python",
    }))
    .await;
    assert_eq!(body["all_passed"], false);
    assert_eq!(body["exec_outputs"][0]["passed"], true);
    assert_eq!(body["exec_outputs"][1]["passed"], false);
    assert_eq!(body["exec_outputs"][1]["stdout"], "NO\n");
}

#[tokio::test]
async fn fibonacci() {
    let body = judge(json!({
        "code": "\nn = int(input())\n\nif n <= 0:\n    print(\"0\")\nelse:\n    fib = [0] * (n + 1)\n    fib[0] = 0\n    \n    if n >= 1:\n        fib[1] = 1\n    \n    for i in range(2, n + 1):\n        fib[i] = fib[i-1] + fib[i-2]\n    \n    print(fib[n])\n        ",
        "stdin_stdout": [
            {"stdin": "5", "stdout": "5"},
            {"stdin": "10", "stdout": "55"},
            {"stdin": "1", "stdout": "1"},
            {"stdin": "0", "stdout": "0"},
        ],
        "language": "python",
    }))
    .await;
    assert_all_passed(&body, 4);
}

#[tokio::test]
async fn syntax_error_fails_the_compile_step() {
    let body = judge(json!({
        "code": "\nprint(\"Missing closing parenthesis\"\n        ",
        "stdin_stdout": [{"stdin": "", "stdout": ""}],
        "language": "python",
    }))
    .await;
    assert_eq!(body["all_passed"], false);
    assert_eq!(body["compile_output"]["passed"], false);
    let stderr = body["compile_output"]["stderr"].as_str().expect("stderr");
    assert!(stderr.contains("SyntaxError"), "{stderr}");
    assert_eq!(body["exec_outputs"], json!([]));
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let body = judge(json!({
        "code": "\nwhile True:\n    pass  # Infinite loop\n        ",
        "stdin_stdout": [{"stdin": "", "stdout": ""}],
        "language": "python",
    }))
    .await;
    assert_eq!(body["all_passed"], false);
    assert_eq!(
        body["exec_outputs"][0]["timed_out"], true,
        "{}",
        body["exec_outputs"][0]
    );
    assert_eq!(body["exec_outputs"][0]["stdout"], "Error: Timed out");
}

#[tokio::test]
async fn json_in_json_out() {
    let body = judge(json!({
        "code": "\nimport json\n\n# Parse JSON input\ndata = json.loads(input())\n# Process data\nresult = {\n    \"sum\": sum(data[\"numbers\"]),\n    \"product\": 1,\n    \"has_negative\": False\n}\n\nfor num in data[\"numbers\"]:\n    result[\"product\"] *= num\n    if num < 0:\n        result[\"has_negative\"] = True\n\n# Output JSON result\nprint(json.dumps(result))\n        ",
        "stdin_stdout": [
            {"stdin": "{\"numbers\": [1, 2, 3, 4, 5]}", "stdout": "{\"sum\": 15, \"product\": 120, \"has_negative\": false}"},
            {"stdin": "{\"numbers\": [-1, 2, -3, 4]}", "stdout": "{\"sum\": 2, \"product\": 24, \"has_negative\": true}"},
        ],
        "language": "python",
    }))
    .await;
    assert_all_passed(&body, 2);
}

#[tokio::test]
async fn cases_do_not_share_state() {
    let body = judge(json!({
        "code": "import builtins\nprint(getattr(builtins, 'seen', 'fresh'))\nbuiltins.seen = 'leaked'",
        "stdin_stdout": [{"stdin": "", "stdout": "fresh"}, {"stdin": "", "stdout": "fresh"}, {"stdin": "", "stdout": "fresh"}],
        "language": "python",
    }))
    .await;
    assert_all_passed(&body, 3);
}

#[tokio::test]
async fn an_unsupported_language_is_400_naming_the_supported_ones() {
    let api = Api::new(shared_with(CONFIG));
    let (status, body) = api
        .post(
            "/execute",
            json!({"code": "x", "stdin_stdout": [], "language": "cobol"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unsupported_language");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("'python'") && message.contains("'cpp'"),
        "{message}"
    );
}

#[tokio::test]
async fn cpp_compiles_and_runs_where_gxx_exists() {
    let has_gxx = std::process::Command::new("g++")
        .arg("--version")
        .output()
        .is_ok();
    let payload = json!({
        "code": "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }\n",
        "stdin_stdout": [{"stdin": "5 7", "stdout": "12"}, {"stdin": "10 -3", "stdout": "7"}],
        "language": "cpp",
    });
    if !has_gxx {
        let api = Api::new(shared_with(CONFIG));
        let (status, body) = api.post("/execute", payload).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("unsupported_language"))
        );
        return;
    }
    let body = judge(payload).await;
    assert_all_passed(&body, 2);
    let body = judge(json!({
        "code": "int main() { return undefined_name; }",
        "stdin_stdout": [{"stdin": "", "stdout": ""}],
        "language": "cpp",
    }))
    .await;
    assert_eq!(body["compile_output"]["passed"], false);
    assert!(
        body["compile_output"]["stderr"]
            .as_str()
            .expect("stderr")
            .contains("undefined_name")
    );
    assert_eq!(body["exec_outputs"], json!([]));
}
