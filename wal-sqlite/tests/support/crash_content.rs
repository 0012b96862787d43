//! Shared by the crash-child binary and the crash test: the deterministic content of item
//! (generation, task, counter), 64..=1024 bytes.

pub fn content(generation: u64, task: u64, counter: u64) -> Vec<u8> {
    let unit = format!("g{generation}t{task}n{counter};");
    let len = 64 + ((counter * 37 + task * 11) % 961) as usize;
    unit.bytes().cycle().take(len).collect()
}
