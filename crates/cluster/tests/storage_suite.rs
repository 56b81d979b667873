//! openraft's own test suite for log storage and state machines, run against Wharf's
//! (the Raft log on disk and the definitions state machine), each case in a fresh
//! directory.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use wharf_cluster::raft::log_store::LogStore;
use wharf_cluster::raft::state_machine::StateMachine;
use wharf_cluster::raft::TypeConfig;
use wharf_cluster::{NoApplier, NodeId};
use wharf_store::raft_log::RaftLog;

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = RaftLog::open(dir.path()).expect("a new Raft log opens");
        let machine = StateMachine::open(dir.path(), Arc::new(NoApplier), false)
            .expect("a new state machine opens");
        Ok((dir, LogStore::new(log), machine))
    }
}

#[test]
fn the_raft_log_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(OnDisk).expect("openraft's storage suite passes");
}
