//! The agent-traffic guard end to end: the injection, PII and benign corpora of `tests/data/guard/` sent through a
//! gateway to a real upstream that echoes the body it received, and secrets in upstream responses.

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, Upstream, repo_root, send};

const DENY: &[&str] = &[
    r"(?i)\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}\b(instructions?|prompts?|rules|directions)\b",
    r"(?i)\byou are now\b.{0,40}\b(dan|jailbroken|unrestricted|developer mode)\b",
    r"(?i)\b(reveal|print|show|repeat|output|leak)\b.{0,40}\b(system prompt|hidden (instructions|prompt)|initial instructions)\b",
    r"(?i)\b(developer mode|jailbreak|jailbroken|do anything now)\b",
    r"(?i)\bpretend (you are|to be)\b.{0,40}\b(no|without) (rules|restrictions|filters)\b",
    r"(?i)\b(exfiltrate|send|post|upload)\b.{0,60}\b(api[_ ]?keys?|credentials|passwords?|secrets?)\b.{0,40}\bto\b",
    r"(?i)</?(system|assistant)>|\[\s*system\s*\]|###\s*(system|instruction)",
    r"(?i)\boverride\b.{0,30}\b(safety|guardrails|policy|policies)\b",
];

fn config(up: &str) -> String {
    let deny: Vec<String> = DENY.iter().map(|p| format!("'{p}'")).collect();
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
audit: {{ path: audit.log }}
upstreams:
  u: {{ targets: ["http://{up}"] }}
routes:
  - name: guarded
    match: {{ path_prefix: /echo-body }}
    upstream: u
    plugins:
      - guard:
          request:
            max_text_length: 2000
            deny_patterns: [{deny}]
            detectors: {{ credit_card: block, iban: block, aws_access_key: block, private_key: block, jwt: block, email: redact, phone: redact }}
          response:
            max_size: 64KiB
            detectors: {{ aws_access_key: redact, private_key: block }}
  - name: responses-only
    match: {{ path: /echo-body, headers: {{ x-guard: responses }} }}
    upstream: u
    plugins:
      - guard: {{ response: {{ max_size: 64KiB, detectors: {{ aws_access_key: redact, private_key: block }} }} }}
"#,
        deny = deny.join(", ")
    )
}

fn corpus(name: &str) -> Vec<String> {
    std::fs::read_to_string(repo_root().join("tests/data/guard").join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// Sends `text` as an OIP v2 BYTES tensor, the way an LLM-serving model receives prompts.
async fn prompt(gw: &Gateway, text: &str) -> modelgate_test_support::Resp {
    let body = serde_json::json!({ "inputs": [{ "name": "prompt", "datatype": "BYTES", "shape": [1], "data": [text] }] }).to_string();
    send(Method::POST, &gw.url("/echo-body"), &[("content-type", "application/json")], body).await
}

#[tokio::test]
async fn corpora_are_blocked_or_redacted_and_benign_text_passes() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up.addr)).await;

    for line in corpus("injection.txt") {
        let r = prompt(&gw, &line).await;
        r.assert_error(400, "content_blocked");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("deny_pattern"), "{line}");
    }
    let served_before = up.count().await;
    for line in corpus("pii.txt") {
        let (detector, text) = line.split_once('\t').unwrap();
        let text = text.replace("\\n", "\n");
        let r = prompt(&gw, &text).await;
        if matches!(detector, "email" | "phone") {
            assert_eq!(r.status, 200, "{line}");
            let seen = r.json()["inputs"][0]["data"][0].as_str().unwrap().to_string();
            assert!(seen.contains(&format!("[REDACTED:{detector}]")), "{detector}: upstream saw {seen:?}");
        } else {
            r.assert_error(400, "content_blocked");
            let message = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains(&format!("detector:{detector}")), "{line}: {message}");
            // The secret is never echoed back in the error.
            assert!(!message.contains(&text[text.len() / 2..]), "{message}");
        }
    }
    assert_eq!(up.count().await, served_before + 5, "only the 5 redacted requests reached the upstream");

    // Benign text: report the false-positive rate.
    let benign = corpus("benign.txt");
    let mut false_positives = Vec::new();
    for line in &benign {
        let r = prompt(&gw, line).await;
        let passed_unchanged = r.status == 200 && r.json()["inputs"][0]["data"][0].as_str() == Some(line.as_str());
        if !passed_unchanged {
            false_positives.push(line.clone());
        }
    }
    println!("guard false-positive rate on tests/data/guard/benign.txt: {}/{} {false_positives:?}", false_positives.len(), benign.len());
    assert!(false_positives.is_empty(), "benign lines flagged: {false_positives:?}");

    // Too long a text is blocked.
    prompt(&gw, &"a".repeat(2001)).await.assert_error(400, "content_blocked");

    // Detections are metrics and audit events; the log never holds the matched secret.
    let metrics = String::from_utf8(modelgate_test_support::get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics
            .contains(r#"modelgate_guard_detections_total{route="guarded",detector="credit_card",action="block",direction="request"} 4"#),
        "{metrics}"
    );
    // The audit writer appends on its own thread: wait for the lines rather than read the file once.
    let audit_file = gw.dir.path().join("audit.log");
    let written = modelgate_test_support::eventually(std::time::Duration::from_secs(10), || async {
        let audit = std::fs::read_to_string(&audit_file).unwrap_or_default();
        audit.contains("detector:credit_card") && audit.contains("email:redact")
    })
    .await;
    assert!(written, "detections are audit events");
    // Request ids and chain hashes are random hex: they are left out of the search. The card numbers are searched
    // whole (as sent, and as digits only): a bare "4111" turns up in timestamps and durations by chance.
    let audit = without_hex_ids(&std::fs::read_to_string(&audit_file).unwrap());
    let cards = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"];
    for card in cards {
        let digits: String = card.chars().filter(char::is_ascii_digit).collect();
        assert!(!audit.contains(card) && !audit.contains(&digits), "the audit log holds card {card}");
    }
    assert!(!audit.contains("AKIAIOSFODNN7EXAMPLE") && !audit.contains("alice@example.com"));
}

/// `text` with every run of 32 or more hex digits (request ids, hashes) replaced by `<hex>`.
fn without_hex_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 32 { "<hex>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

#[tokio::test]
async fn secrets_in_responses_are_redacted_or_blocked() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up.addr)).await;
    let url = gw.url("/echo-body");
    let only = ("x-guard", "responses");
    // The upstream "leaks" what it is sent back: the response guard sees it on the way out.
    let r =
        send(Method::POST, &url, &[("content-type", "application/json"), only], r#"{"answer": "the key is AKIAIOSFODNN7EXAMPLE"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["answer"], "the key is [REDACTED:aws_access_key]");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    let r = send(Method::POST, &url, &[("content-type", "text/plain"), only], "-----BEGIN PRIVATE KEY-----\nMIGH...").await;
    r.assert_error(502, "response_blocked");
    assert!(!String::from_utf8_lossy(&r.body).contains("MIGH"));
    // A response over `max_size` (64 KiB) is refused, not passed unread.
    let r = send(Method::POST, &url, &[("content-type", "text/plain"), only], Bytes::from(vec![b'x'; 70 << 10])).await;
    r.assert_error(502, "response_too_large");
}

#[tokio::test]
async fn json_schema_checks_bodies_for_non_oip_upstreams() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  u: {{ targets: ["http://{up}"] }}
routes:
  - name: predictions
    match: {{ path_prefix: /predictions }}
    upstream: u
    plugins:
      - json_schema:
          schema:
            type: object
            required: [data]
            properties:
              data: {{ type: array, items: {{ type: number }}, maxItems: 64 }}
              temperature: {{ type: number, minimum: 0, maximum: 2 }}
            additionalProperties: false
"#,
        up = up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let url = gw.url("/predictions/digits");
    assert_eq!(send(Method::POST, &url, &[], r#"{"data": [0.5, 1], "temperature": 0.7}"#).await.status, 200);
    let before = up.count().await;
    for (body, expect) in [
        (r#"{"temperature": 0.7}"#, "\"data\" is a required property"),
        (r#"{"data": ["a"]}"#, "/data/0"),
        (r#"{"data": [], "temperature": 9}"#, "/temperature"),
        (r#"{"data": [], "extra": 1}"#, "extra"),
        ("not json", "not JSON"),
    ] {
        let r = send(Method::POST, &url, &[], body).await;
        r.assert_error(400, "invalid_request");
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(expect), "{body}: {m}");
    }
    assert_eq!(up.count().await, before, "refused bodies never reach the upstream");
    // A broken schema is a config error naming the field.
    std::fs::write(dir.path().join("bad.yaml"), yaml.replace("type: object", "type: 12")).unwrap();
    let out = tokio::process::Command::new(modelgate_test_support::bin())
        .args(["validate", dir.path().join("bad.yaml").to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("routes[0].plugins[0].json_schema.schema: not a valid JSON Schema"), "{text}");
}
