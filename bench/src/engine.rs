//! Placeholder until the engine suite lands.
use crate::report::{Figure, Opts};
pub fn run(_opts: &Opts) -> Result<Vec<Figure>, String> {
    Err("the engine suite is not written yet".into())
}
