//! Kill-and-restart cycles: a program started again and again, each time
//! killed with SIGKILL after a paced pseudo-random delay, until a number of
//! kills have landed on a running process. Used by the embedded-log and the
//! Kafka crash-cycle tests; what is started, and how its unfolded work is
//! measured, is the caller's ([`KillTarget`]).

use crate::XorShift;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

const SIGKILL: i32 = 9;
/// Bounds of the pacing factor. High enough for a target much slower than
/// its reference run: the Kafka engine with batches of 4 makes progress
/// about 35 times slower than with 1,000 (a flush and a publish per batch).
const PACE_MIN: f64 = 0.01;
const PACE_MAX: f64 = 100.0;

/// What the cycles start and kill.
pub trait KillTarget {
    /// Starts the program for cycle `cycle` (from 1), its stderr to [`KillTarget::stderr_file`].
    fn spawn(&mut self, cycle: u64) -> Child;
    /// Inputs waiting to be folded, by the engine's advisory positions (which
    /// it moves after a batch is durable and published). Called only while no
    /// started program is alive.
    fn lag(&mut self) -> u64;
    /// Where a started program's stderr goes (read when a run fails).
    fn stderr_file(&self) -> PathBuf;
    /// Waits until a started program is about to fold (for a Kafka engine:
    /// the group has assigned it its partitions), so that the delay before
    /// its kill counts from there; false when it exited first. At once by default.
    fn wait_ready(&mut self, _child: &mut Child) -> bool {
        true
    }
}

#[derive(Debug, Default)]
pub struct CycleStats {
    pub cycles: u64,
    /// Kills that found the process still running (it died of SIGKILL).
    pub landed: u64,
    /// Of those, kills that left inputs unfolded (by [`KillTarget::lag`]):
    /// the process died with work in hand.
    pub landed_mid_work: u64,
    /// Runs that finished on their own before the kill.
    pub finished: u64,
    /// Inputs waiting to be folded before the first cycle and after the last.
    pub lag_before: u64,
    pub lag_after: u64,
    /// The final pacing factor (1 = the reference run's speed was right).
    pub pace: f64,
}

/// The number of kills to land: `$OVERLAY_CRASH_CYCLES`, or `default`.
pub fn target_kills(default: u64) -> u64 {
    match std::env::var("OVERLAY_CRASH_CYCLES") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("OVERLAY_CRASH_CYCLES={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Starts `target` again and again, each time killing it after a
/// pseudo-random delay, until `kills` kills have landed on a running
/// process. `pace` is the starting pacing factor (a cautious 0.7, or what an
/// earlier phase learned).
///
/// Pacing: the delay (from [`KillTarget::wait_ready`]) is uniform in [0.3 ×
/// startup, startup + 1.5 × pace × remaining work / kills left), where
/// startup is how long a run with nothing to do takes (from the same moment)
/// and remaining work is the input lag at the reference run's
/// speed (`inputs_per_s`, in the units of [`KillTarget::lag`]). `pace`
/// corrects for this machine's speed right now (other tests, other builds):
/// each cycle it is multiplied by (lag now / lag planned), bounded to [0.6,
/// 1.25], where the plan spreads the work evenly over the kills; and it is
/// halved when a run finishes before its kill (and startup is cut when a run
/// with nothing to do does). So the kills spread over the whole of the work
/// instead of the work ending early.
pub fn kill_cycles(
    target: &mut dyn KillTarget,
    kills: u64,
    seed: u64,
    mut startup_s: f64,
    inputs_per_s: f64,
    pace: f64,
) -> CycleStats {
    let mut st = CycleStats { pace, ..CycleStats::default() };
    let max_cycles = kills * 20 + 200;
    st.lag_before = target.lag();
    // `OVERLAY_CRASH_TRACE=1`: a line per cycle, for tuning the pacing.
    let trace = std::env::var_os("OVERLAY_CRASH_TRACE").is_some();
    while st.landed < kills {
        assert!(st.cycles < max_cycles, "{} cycles without landing {kills} kills: {st:?}", st.cycles);
        st.cycles += 1;
        // A new generator per cycle, seeded by the cycle: any cycle can be replayed alone.
        let mut rng = XorShift::new(seed ^ st.cycles.wrapping_mul(0xA24B_AED4_963E_E407));
        let lag = target.lag();
        let kills_left = kills - st.landed;
        let planned = st.lag_before as f64 * kills_left as f64 / kills as f64;
        if planned > 0.0 {
            // Proportional, and bounded per cycle: one lucky or unlucky cycle moves it little.
            st.pace = (st.pace * (lag as f64 / planned).clamp(0.6, 1.25)).clamp(PACE_MIN, PACE_MAX);
        }
        let work_s = st.pace * lag as f64 / inputs_per_s;
        let delay = 0.3 * startup_s + rng.unit() * (0.7 * startup_s + 1.5 * work_s / kills_left as f64);
        let mut child = target.spawn(st.cycles);
        if target.wait_ready(&mut child) {
            std::thread::sleep(Duration::from_secs_f64(delay));
        }
        let still_running = child.try_wait().expect("try_wait").is_none();
        if still_running {
            child.kill().expect("SIGKILL");
        }
        let status = child.wait().expect("wait");
        if status.signal() == Some(SIGKILL) {
            assert!(still_running);
            st.landed += 1;
            let lag_after = target.lag();
            if lag_after > 0 {
                st.landed_mid_work += 1;
            }
            if trace {
                eprintln!(
                    "[cycles] {}: lag {lag}, delay {delay:.3} s, killed, lag {lag_after}, pace {:.3}",
                    st.cycles, st.pace
                );
            }
        } else {
            if trace {
                eprintln!(
                    "[cycles] {}: lag {lag}, delay {delay:.3} s, finished ({status}), pace {:.3}",
                    st.cycles, st.pace
                );
            }
            let stderr = std::fs::read_to_string(target.stderr_file()).unwrap_or_default();
            assert!(status.success(), "cycle {}: `overlay run` failed after a crash ({status}):\n{stderr}", st.cycles);
            st.finished += 1;
            st.pace = (st.pace * 0.5).max(PACE_MIN);
            if lag == 0 {
                // Nothing to do, and still it ended before the kill: starts are quicker than measured.
                startup_s *= 0.8;
            }
        }
    }
    st.lag_after = target.lag();
    st
}
