//! The queue contract against the embedded SQLite backend (a real file in a temporary dir).

use closeflow_server::queue::contract::{self, Harness};
use closeflow_server::queue::sqlite::{Options, SqliteQueue};
use std::time::Duration;

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Harness for Sqlite {
    type Q = SqliteQueue;
    async fn open(&mut self) -> SqliteQueue {
        let mut o = Options::in_dir(self.dir.path());
        o.dedup_window_ms = self.dedup_window().as_millis() as i64;
        SqliteQueue::open(o).expect("the queue opens")
    }
    fn dedup_window(&self) -> Duration {
        Duration::from_millis(300)
    }
}

#[tokio::test]
async fn sqlite_backend_passes_the_queue_contract() {
    contract::check_all(|| Sqlite {
        dir: tempfile::tempdir().unwrap(),
    })
    .await;
}
