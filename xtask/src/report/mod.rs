//! Reporting: what people see while work runs (a live progress line, one line
//! per finished image) and after it (a summary table), and `--json` for
//! machines. It learns what happens from events alone ([`crate::model::Event`]).

mod json;
mod progress;
mod text;

pub use json::{print_json, print_list, OutcomeDocument, PlanDocument, PlanEntry, SCHEMA};
pub use progress::{Progress, Reporter, Verbosity, LOG_TAIL_LINES};
pub use text::{action_text, count_line, human_bytes, plan_text, summary_text};
