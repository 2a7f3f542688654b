//! Export and import of a whole store: the file format ([`format`]), the rate bound of both
//! directions ([`rate`]) and their progress display ([`progress`]). The commands themselves are
//! `commands::export` and `commands::import`.

pub mod format;
pub mod progress;
pub mod rate;

pub use format::{Contents, FileError, Header, Record, Source, Totals};
pub use progress::{Progress, ProgressMode};
pub use rate::{Pace, Rate};
