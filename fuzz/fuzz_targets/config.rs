//! Any configuration file given to `overlay --config`, with any environment
//! overrides: the input is the file's text, then (after a NUL byte, which a
//! TOML file cannot hold) one `NAME=value` override per line. Parsed,
//! overridden and validated as `Config::load` does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use overlay_config::Config;

fuzz_target!(|data: &[u8]| {
    let (text, env) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    // `Config::load` reads the file as UTF-8 and refuses other bytes before parsing.
    let (Ok(text), Ok(env)) = (std::str::from_utf8(text), std::str::from_utf8(env)) else { return };
    let vars: Vec<(String, String)> = env
        .lines()
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::from_toml_and_env(Some(text), vars) {
        Err(e) => {
            // A refusal says why, down to its innermost cause.
            assert!(!format!("{e:#}").trim().is_empty(), "a refusal says why");
            assert!(!e.root_cause().to_string().trim().is_empty(), "a refusal's cause says why");
        }
        Ok(cfg) => {
            // What is accepted, overrides included, writes out as a file that
            // loads (with no overrides) to the same configuration, and that
            // file is the one the configuration writes: a fixed point.
            // What goes to librdkafka as C strings holds no NUL.
            let k = &cfg.kafka;
            let mut texts = [&k.brokers, &k.group_id].into_iter().chain(k.properties.iter().flat_map(|(k, v)| [k, v]));
            assert!(texts.all(|t| !t.contains('\0')), "an accepted configuration has no NUL for librdkafka");
            let written = cfg.to_toml().expect("an accepted configuration writes as TOML");
            let again = Config::from_toml_and_env(Some(&written), [])
                .unwrap_or_else(|e| panic!("the written configuration loads: {e:#}\n--- written:\n{written}"));
            assert_eq!(again, cfg, "the written configuration loads to the same one\n--- written:\n{written}");
            assert_eq!(again.to_toml().expect("it writes again"), written);
        }
    }
});
