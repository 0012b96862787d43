//! What every driver's schema migration decides the same way: refuse a schema newer than this
//! build, and which migrations remain. The drivers run the statements (typed, in their own
//! transaction or lock) and record each new version.

use crate::error::{Failure, Fallible};
use crate::store::SCHEMA_VERSION;

/// The migrations still to apply to tables `{p}*` at schema version `current`, each with the
/// version it brings the schema to. `all[i]` brings the schema to version `i + 1`.
pub(crate) fn pending(
    p: &str,
    current: i64,
    all: Vec<Vec<String>>,
) -> Fallible<impl Iterator<Item = (i64, Vec<String>)>> {
    if current > SCHEMA_VERSION {
        return Err(Failure::Unsupported(format!(
            "schema version {current} of tables `{p}*` is newer than this build supports \
             ({SCHEMA_VERSION}); upgrade sync-engine"
        )));
    }
    let done = usize::try_from(current).unwrap_or(0);
    Ok(all.into_iter().enumerate().skip(done).map(|(i, steps)| (i as i64 + 1, steps)))
}
