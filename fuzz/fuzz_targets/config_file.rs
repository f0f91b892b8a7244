//! Config files: arbitrary text parses to a config or an error, and validation never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = paxoskv::config::ReplicatedConfig::from_toml(text) {
            let _ = c.validate();
            let _ = paxoskv::config::ReplicatedConfig::from_toml(&c.to_toml());
        }
    }
});
