//! The scenario target: `Scenario::parse` never panics, places its errors
//! inside the input, and what it accepts prints back to the same scenario.

use maptrace_sim::scenario::{Scenario, Step};

/// The steps without their source lines (printing drops comments and blank
/// lines, so only the steps themselves must survive a round trip).
fn without_lines(s: &Scenario) -> Vec<Step> {
    s.steps
        .iter()
        .cloned()
        .map(|mut step| {
            match &mut step {
                Step::Op { line, .. } => *line = 0,
                Step::Parallel(ops) => ops.iter_mut().for_each(|op| op.0 = 0),
                _ => {}
            }
            step
        })
        .collect()
}

/// Parses `text` and checks the parser's promises; panics on a breach.
pub fn check(text: &str) {
    match Scenario::parse(text) {
        Err(e) => {
            let line = text.lines().nth(e.line.wrapping_sub(1));
            let Some(line) = line else {
                panic!(
                    "error {e} names line {} of {}",
                    e.line,
                    text.lines().count()
                );
            };
            assert!(
                (1..=line.len() + 1).contains(&e.col),
                "error {e} names column {} of a {}-byte line",
                e.col,
                line.len()
            );
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{}:{}: ", e.line, e.col)) && !e.msg.is_empty(),
                "{shown}"
            );
        }
        Ok(s) => {
            let printed = s.to_string();
            let again = match Scenario::parse(&printed) {
                Ok(a) => a,
                Err(e) => panic!("the printed scenario does not parse: {e}\n{printed}"),
            };
            assert_eq!(
                without_lines(&again),
                without_lines(&s),
                "the round trip changed the scenario:\n{text:?}\nprinted:\n{printed}"
            );
            assert_eq!(again.to_string(), printed, "printing is not stable");
        }
    }
}
