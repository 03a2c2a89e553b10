//! Fuzzing the parsers of what other processes write (session files,
//! journals) and of the small grammars every reader shares (durations,
//! sizes, rates, thresholds, deadlines): no input may panic. The readers
//! of plan files, ROADMAPs and prompt files are fuzzed in `orch-readers`.
//!
//! Cases per property: `PROPTEST_CASES` (default 256; `scripts/torture.sh`
//! runs 20,000).

use proptest::prelude::*;

use crate::plan::Threshold;

proptest! {
    #[test]
    fn small_grammars_never_panic(text in "\\PC{0,40}") {
        let _ = crate::time::parse_duration(&text);
        let _ = crate::size::parse_size(&text);
        let _ = text.parse::<crate::rate::Rate>();
        let _ = Threshold::parse(&text);
        let _ = crate::time::parse_deadline(&text, &crate::time::now());
        let _ = crate::time::parse_rfc3339(&text);
    }

    #[test]
    fn session_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = serde_json::from_slice::<crate::result::TaskResult>(&bytes);
        let _ = serde_json::from_slice::<crate::claim::ClaimRecord>(&bytes);
        let _ = serde_json::from_slice::<crate::heartbeat::Heartbeat>(&bytes);
        let _ = serde_json::from_slice::<crate::plan::PlanDoc>(&bytes);
        let _ = serde_json::from_slice::<crate::session::SessionInfo>(&bytes);
        let _ = serde_json::from_slice::<crate::mailbox::Message>(&bytes);
    }

    #[test]
    fn journals_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("j");
        std::fs::write(&p, &bytes).expect("write");
        let mut r = crate::journal::Reader::new(p);
        let _ = r.read_new();
        let _ = r.read_new();
    }
}
