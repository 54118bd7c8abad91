#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use purple_tests::*;
#[test]
fn placeholder_runs() { if !require_root("placeholder") { return; } for c in Caller::BOTH { let out = sandbox_sh(c, "id -u"); assert_eq!(ok_stdout(&out).trim(), c.sandbox_uid().to_string()); } }
