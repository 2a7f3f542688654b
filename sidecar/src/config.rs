//! The sidecar's configuration: command-line flags, each also read from a `ZMM_*` variable.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use crate::metadata::ReplicationGroupId;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "zenko-memcached-sidecar",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    /// A tool to run instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// What this sidecar serves: both APIs (`combined`), only CloudServer's data API (`data`) or
    /// only its metadata RPC (`metadata`). Nothing listens on the address of an API the role does
    /// not serve; the admin address always listens.
    #[arg(long, env = "ZMM_ROLE", value_enum, default_value_t = Role::Combined)]
    pub role: Role,

    /// memcached servers, HOST:PORT[,HOST:PORT...]. Without it the sidecar keeps everything
    /// in an embedded in-process store that is lost when it stops.
    #[arg(long, env = "ZMM_MEMCACHED", value_delimiter = ',')]
    pub memcached: Vec<String>,

    /// Servers that hold each item: with 2 or more, losing a server (or its memory) loses
    /// nothing. At most the number of --memcached servers; every sidecar of a store must use
    /// the same (it is recorded in the store).
    #[arg(long, env = "ZMM_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub replication_factor: u32,

    /// How fast a server of a replicated store that lost its contents is refilled from the
    /// others, in MiB/s (the copy competes with requests for memcached and the network).
    #[arg(long, env = "ZMM_REFILL_RATE_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub refill_rate_mib: u64,

    /// Where CloudServer's data client connects (HTTP).
    #[arg(long, env = "ZMM_DATA_ADDR", default_value = "0.0.0.0:9991")]
    pub data_addr: SocketAddr,

    /// Where CloudServer's metadata client connects (socket.io).
    #[arg(long, env = "ZMM_METADATA_ADDR", default_value = "0.0.0.0:9990")]
    pub metadata_addr: SocketAddr,

    /// Health (/healthz, /readyz) and Prometheus metrics (/metrics).
    #[arg(long, env = "ZMM_ADMIN_ADDR", default_value = "0.0.0.0:9992")]
    pub admin_addr: SocketAddr,

    /// Bytes of blob data per memcached item; must fit memcached's item size limit (-I). Only
    /// the roles that serve data use it.
    #[arg(long, env = "ZMM_CHUNK_SIZE", default_value_t = 512 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    pub chunk_size: u64,

    /// Replication group id written into version ids (CloudServer's `replicationGroupId`):
    /// 1 to 7 letters and digits.
    #[arg(long, env = "ZMM_REPLICATION_GROUP_ID", default_value = "RG001",
          value_parser = |text: &str| ReplicationGroupId::new(text))]
    pub replication_group_id: ReplicationGroupId,

    /// Memory for cached metadata pages, in MiB: the bound on what the metadata store keeps
    /// in the sidecar, however large the databases grow. Only the roles that serve metadata
    /// use it.
    #[arg(long, env = "ZMM_PAGE_CACHE_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub page_cache_mib: u64,

    /// Seconds that replaced metadata pages stay readable for listings that started before
    /// the change; a listing running longer fails rather than reading a mix. memcached holds
    /// about (metadata puts per second) x (a 16 to 64 KiB page) x this many bytes of them.
    #[arg(long, env = "ZMM_SCAN_GRACE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub scan_grace_secs: u64,

    /// Log filter, e.g. `info` or `zenko_memcached_sidecar=debug`.
    #[arg(long, env = "ZMM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log lines as plain text or as one JSON object each. Text is coloured only when standard
    /// output is a terminal, so that container log collectors get no escape codes.
    #[arg(long, env = "ZMM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds to wait at start for every memcached server to answer before giving up.
    #[arg(long, env = "ZMM_STARTUP_WAIT", default_value_t = 0)]
    pub startup_wait: u64,

    /// Memory of the embedded store, in MiB (only without --memcached).
    #[arg(long, env = "ZMM_EMBEDDED_MEMORY_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub embedded_memory_mib: u64,

    /// Instead of serving, GET this local URL once and exit 0 if it answers 200
    /// (a health check for images without a shell), e.g. http://127.0.0.1:9992/readyz.
    #[arg(long, value_name = "URL")]
    pub probe: Option<String>,

    /// Largest blob a PUT may announce, in bytes (S3's single-PUT limit by default); a larger
    /// Content-Length is refused with `EntityTooLarge` before any byte is stored.
    #[arg(long, env = "ZMM_MAX_OBJECT_SIZE", default_value_t = 5 * 1024 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_object_size: u64,

    /// Largest metadata value a `put` may store, in bytes; kept below socket.io's 100 MB
    /// message limit so that an oversized value gets an answer instead of a dropped connection.
    #[arg(long, env = "ZMM_MAX_METADATA_VALUE", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=crate::metadata::MAX_PAYLOAD))]
    pub max_metadata_value: u64,

    /// Connections served at once on each of the data and metadata listeners; further
    /// connections wait in the kernel's accept queue until one closes.
    #[arg(long, env = "ZMM_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Connections one client address may have open at once on each of the data and metadata
    /// listeners; a further one is answered `503 ServiceUnavailable` naming this limit and
    /// closed, so that one client cannot take every slot of --max-connections. Clients seen
    /// through a NAT share one address: raise it there.
    #[arg(long, env = "ZMM_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_client: u64,

    /// Listings (`createReadStream`, `rawListKeys`) one metadata client may have open at once;
    /// the call beyond it is refused with an error answer.
    #[arg(long, env = "ZMM_MAX_STREAMS_PER_CLIENT", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_streams_per_client: u64,

    /// Item size limit of the embedded store, in bytes (memcached's -I).
    #[arg(long, env = "ZMM_EMBEDDED_ITEM_SIZE_MAX", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub embedded_item_size_max: u64,
}

/// Which of CloudServer's two backends a sidecar serves. Production deployments run a module of
/// each kind, each with memcached sized for its own items: large blob chunks for data, many small
/// pages for metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Both the data API and the metadata RPC, from one memcached pool.
    #[default]
    Combined,
    /// Only the data API (HTTP, `--data-addr`).
    Data,
    /// Only the metadata RPC (socket.io, `--metadata-addr`).
    Metadata,
}

impl Role {
    pub fn serves_data(self) -> bool {
        matches!(self, Role::Combined | Role::Data)
    }

    pub fn serves_metadata(self) -> bool {
        matches!(self, Role::Combined | Role::Metadata)
    }

    /// The name `--role` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Combined => "combined",
            Role::Data => "data",
            Role::Metadata => "metadata",
        }
    }
}

/// The form of the log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The sidecar's tools, each run once instead of serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Walk every metadata database in memcached and check it: the catalog, each root
    /// record, every page and out-of-line value it references (presence, checksums, key
    /// order, separators, sizes, expiry). Read-only; safe next to serving sidecars. Prints
    /// one line per database and a summary; exits 0 only when everything holds.
    Check(CheckArgs),
    /// Show or set the placement recorded in the store (the servers and replication factor
    /// it is written under).
    Placement(PlacementArgs),
    /// Write every metadata database (each at one consistent snapshot), the catalog, the
    /// deployment id and every published blob to one checksummed file: a backup, or the
    /// first half of a migration. Reads at a bounded rate; safe next to serving sidecars.
    Export(ExportArgs),
    /// Verify an export file whole, then write it into a store: blobs keep their keys, the
    /// store takes the export's deployment id. Refuses a damaged file before writing
    /// anything, and a store that holds data unless told --force.
    Import(ImportArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub servers: Servers,

    /// The file to write, `-` for standard output, or a directory, where the file is named
    /// `zmm-export-<UTC time>.zmm`. A file is written under PATH.partial and renamed once
    /// complete, so PATH is never a cut-short export.
    #[arg(long, value_name = "PATH")]
    pub out: std::path::PathBuf,

    /// With --out a directory: once the export is complete, delete the older
    /// `zmm-export-*.zmm` files there, keeping this many (the new one included).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,

    /// Most bytes read from memcached per second (e.g. 64MiB, 500KB, unlimited).
    #[arg(long, default_value = "64MiB")]
    pub rate: crate::transfer::Rate,

    /// How progress is shown on standard error.
    #[arg(long, value_enum, default_value_t = crate::transfer::ProgressMode::Auto)]
    pub progress: crate::transfer::ProgressMode,
}

#[derive(Clone, Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub servers: Servers,

    /// The export file to read (a file: it is read twice, once to verify it whole, then to
    /// write it).
    #[arg(long = "in", value_name = "PATH")]
    pub input: std::path::PathBuf,

    /// Most bytes written to memcached per second (e.g. 64MiB, 500KB, unlimited).
    #[arg(long, default_value = "unlimited")]
    pub rate: crate::transfer::Rate,

    /// What to do with a store that already holds data (databases, blobs or a deployment
    /// id); without it such a store is refused.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub force: Option<Force>,

    /// Replication factor of a store that has no placement yet (a fresh one); a store with
    /// a placement keeps its own, and a different value here is refused.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub replication_factor: Option<u32>,

    /// How progress is shown on standard error.
    #[arg(long, value_enum, default_value_t = crate::transfer::ProgressMode::Auto)]
    pub progress: crate::transfer::ProgressMode,
}

/// What `import --force` does with a store that already holds data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Force {
    /// Write everything of the export over what is there: its keys, blobs and deployment id
    /// replace those of the same names; keys, databases and blobs it does not hold stay.
    Overwrite,
}

#[derive(Clone, Debug, clap::Args)]
pub struct PlacementArgs {
    #[command(subcommand)]
    pub action: PlacementAction,
}

/// The servers a tool works on.
#[derive(Clone, Debug, clap::Args)]
pub struct Servers {
    /// The memcached servers, exactly as the sidecars list them.
    #[arg(long, env = "ZMM_MEMCACHED", value_delimiter = ',', required = true)]
    pub memcached: Vec<String>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum PlacementAction {
    /// Print what each server holds: its placement record, or data without one, or nothing.
    Show(Servers),
    /// Record these servers as the store's placement on every one of them, accepting the
    /// store as it is now: after a server restarted empty (its share of the data is lost),
    /// sidecars refuse to serve until this is run. Never use it to add or remove servers of
    /// a store that holds data: the data would not move (`change` moves it).
    Accept(Servers),
    /// Move the store from its servers (--memcached) to others (--to), or to another
    /// replication factor, while its sidecars serve: only the items whose owners change are
    /// copied. Every sidecar follows the change by itself; start new sidecars with the new list.
    /// Prints progress, exits 0 once the store is on the new servers. Interrupted, run it
    /// again with the same arguments: it resumes.
    Change(ChangeArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct ChangeArgs {
    /// The servers the store is on now.
    #[command(flatten)]
    pub servers: Servers,

    /// The servers the store goes to (any mix of the current ones and new ones).
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,

    /// The replication factor on the new servers (default: the store's current one).
    #[arg(long)]
    pub replication_factor: Option<u32>,

    /// How fast items are copied, in MiB/s.
    #[arg(long, default_value_t = 64)]
    pub rate_mib: u64,

    /// How long to wait for every sidecar to adopt each step, and for an export or import
    /// under way to end, in seconds.
    #[arg(long, default_value_t = 300)]
    pub adopt_timeout_secs: u64,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub servers: Servers,

    /// Print only databases with problems, and the summary.
    #[arg(long)]
    pub quiet: bool,
}
