//! Given a size limit for the audit log, when events keep coming, the file rotates as the
//! decision log does and no event is lost between the files.

mod support;

use std::time::Duration;

use support::{eventually, standard_directory, Identity};

#[tokio::test]
async fn the_audit_log_rotates_by_size_and_keeps_the_configured_files() {
    let id = Identity::start(
        "audit_rotation:\n  max_file_bytes: 600\n  keep_files: 2\n",
        &standard_directory(),
    );
    // Each token issued writes one audit line of a few hundred bytes.
    for _ in 0..12 {
        let resp = id.service_token("reports", "reports-secret", &[]).await;
        assert_eq!(resp.status(), 200);
    }
    let read = |name: &str| std::fs::read_to_string(id.path(name)).unwrap_or_default();
    eventually("two rotated files", Duration::from_secs(30), || async {
        id.path("audit.log.2").exists()
    })
    .await;
    assert!(
        !id.path("audit.log.3").exists(),
        "more files kept than keep_files"
    );
    for name in ["audit.log", "audit.log.1", "audit.log.2"] {
        let text = read(name);
        assert!(text.len() <= 600 + 400, "{name} holds {} bytes", text.len());
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            assert!(event["event"].is_string(), "{line}");
        }
    }
}
