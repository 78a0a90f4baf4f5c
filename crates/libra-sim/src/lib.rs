//! A discrete-event simulator of a continuous-batching multi-LoRA engine driving `CacheCore`.
//! Every cache decision is the library's; the simulator supplies the clock, the request
//! schedule, step times from a roofline model and a host link that completes copies in order.
pub mod engine;
pub mod grid;
pub mod hw;
pub mod layerwise;
pub mod oracle;
pub mod peers;
pub mod report;
pub mod rng;
pub mod summary;
pub mod synth;
pub mod trace;
pub mod workload;

pub use engine::{run, EngineConfig, RunResult, SimPolicy, TimingBackend};
pub use hw::{Gpu, Hardware, ModelShape, StepLoad};
pub use trace::{parse_azure_csv, TraceRow};
pub use workload::{generate, FollowupPick, Source, Workload, WorkloadSpec};
