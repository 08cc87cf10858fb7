//! Look-ups several at once: a function of each item on a few threads,
//! the answers in the items' order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f` of each item, `parallel` at a time, in the items' order.
pub fn each<T: Sync, R: Send>(items: &[T], parallel: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(items.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(k) else { return };
                let answer = f(item);
                answers.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(answer);
            });
        }
    });
    let answers = answers.into_inner().unwrap_or_else(|e| e.into_inner());
    answers.into_iter().map(|a| a.expect("every item is asked")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_keeps_the_order() {
        let items: Vec<u32> = (0..50).collect();
        assert_eq!(each(&items, 4, |n| n * 2), items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(each(&[] as &[u32], 4, |n| *n), Vec::<u32>::new());
    }
}
