//! Placeholder until the cuckoo suite lands.
use crate::report::{Figure, Opts};
pub fn run(_opts: &Opts) -> Result<Vec<Figure>, String> {
    Err("the cuckoo suite is not written yet".into())
}
