//! Options of the SQLite engine, with their defaults spelled out, and URL parsing.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use courier_core::{Clock, InvalidInput, SystemClock};

/// Called just before each commit; an `Err` makes the commit fail as an fsync error would.
/// Only for tests that prove a failed commit loses nothing acknowledged and poisons the engine.
pub type CommitHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// How hard SQLite syncs on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged write survives power loss. Default.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, not power loss. For benchmarks
    /// that want to see the cost of fsync; never the default.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Options for [`crate::SqliteEngine::open`].
#[derive(Clone)]
pub struct SqliteOptions {
    pub(crate) path: PathBuf,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) synchronous: Synchronous,
    pub(crate) jobs_per_commit_max: usize,
    pub(crate) queue_depth_max: usize,
    pub(crate) commit_hook: Option<CommitHook>,
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .field("synchronous", &self.synchronous)
            .field("jobs_per_commit_max", &self.jobs_per_commit_max)
            .field("queue_depth_max", &self.queue_depth_max)
            .field("commit_hook", &self.commit_hook.is_some())
            .finish()
    }
}

impl SqliteOptions {
    /// Options for the database file at `path` (created with its parent directory if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            clock: Arc::new(SystemClock),
            synchronous: Synchronous::Full,
            jobs_per_commit_max: 1_024,
            queue_depth_max: 16_384,
            commit_hook: None,
        }
    }

    /// The clock deadlines are computed from. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sync mode on commit. Default: [`Synchronous::Full`].
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = mode;
        self
    }

    /// Most operations that share one transaction and one fsync. Default 1024.
    pub fn jobs_per_commit_max(mut self, n: usize) -> Self {
        self.jobs_per_commit_max = n.max(1);
        self
    }

    /// Operations that may wait for the writer before callers are slowed down. Default 16 384.
    pub fn queue_depth_max(mut self, n: usize) -> Self {
        self.queue_depth_max = n.max(1);
        self
    }

    /// Installs a hook run before every commit (fault injection for tests). Default none.
    pub fn commit_hook(mut self, hook: CommitHook) -> Self {
        self.commit_hook = Some(hook);
        self
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl FromStr for SqliteOptions {
    type Err = InvalidInput;

    /// Parses `sqlite://path/to/file.db` (relative) or `sqlite:///abs/path.db`.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| InvalidInput::new(format!("not a sqlite URL: {url:?} (expected sqlite://path)")))?;
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(InvalidInput::new("sqlite URL has no file path"));
        }
        Ok(Self::new(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relative_and_absolute_urls() {
        let o: SqliteOptions = "sqlite://data/courier.db".parse().unwrap();
        assert_eq!(o.path(), std::path::Path::new("data/courier.db"));
        let o: SqliteOptions = "sqlite:///var/lib/courier.db".parse().unwrap();
        assert_eq!(o.path(), std::path::Path::new("/var/lib/courier.db"));
        assert!("postgres://x".parse::<SqliteOptions>().is_err());
        assert!("sqlite://".parse::<SqliteOptions>().is_err());
    }
}
