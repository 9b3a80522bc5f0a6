//! The classic bounded producer/consumer ("baozi") example: chefs steam
//! buns into a basket (a bounded `Queue`) and customers eat them. Chefs
//! wait while the basket is full, customers while it is empty, and every
//! bun made is eaten exactly once.
//!
//! ```sh
//! cargo run --example baozi
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::sync::Queue;
use greenhouse::{Error, sleep, spawn};

/// What happened: every bun made, every bun eaten (by whom), and the
/// fullest the basket got.
struct Report {
    made: Vec<String>,
    eaten: Vec<(String, String)>,
    max_in_basket: usize,
}

fn run(chefs: usize, buns_each: usize, customers: usize, basket: usize) -> Result<Report, Error> {
    let q: Queue<Option<String>> = Queue::bounded(basket);
    let made = Rc::new(RefCell::new(Vec::new()));
    let eaten = Rc::new(RefCell::new(Vec::new()));
    let max_in = Rc::new(std::cell::Cell::new(0));
    let chef_hs: Vec<_> = (0..chefs)
        .map(|c| {
            let (q, made, max_in) = (q.clone(), made.clone(), max_in.clone());
            spawn(move || -> Result<(), Error> {
                for n in 0..buns_each {
                    let bun = format!("bun {n} by chef {c}");
                    println!("chef {c} steamed {bun}");
                    made.borrow_mut().push(bun.clone());
                    q.put(Some(bun)).map_err(|e| e.error)?;
                    max_in.set(max_in.get().max(q.len()));
                    sleep(Duration::from_millis((c as u64 + n as u64) % 3));
                }
                Ok(())
            })
        })
        .collect();
    let customer_hs: Vec<_> = (0..customers)
        .map(|c| {
            let (q, eaten) = (q.clone(), eaten.clone());
            spawn(move || -> Result<(), Error> {
                while let Some(bun) = q.get()? {
                    println!("customer {c} ate {bun}");
                    eaten.borrow_mut().push((format!("customer {c}"), bun));
                    sleep(Duration::from_millis(c as u64 % 2));
                }
                Ok(())
            })
        })
        .collect();
    for h in chef_hs {
        h.join()??;
    }
    // Closing time: one `None` per customer.
    for _ in 0..customers {
        q.put(None).map_err(|e| e.error)?;
    }
    for h in customer_hs {
        h.join()??;
    }
    let report = Report {
        made: made.take(),
        eaten: eaten.take(),
        max_in_basket: max_in.get(),
    };
    Ok(report)
}

fn main() -> Result<(), Error> {
    let r = run(3, 10, 4, 5)?;
    println!(
        "{} buns made, {} eaten, basket never held more than {}",
        r.made.len(),
        r.eaten.len(),
        r.max_in_basket
    );
    Ok(())
}

#[test]
fn every_bun_is_eaten_exactly_once_and_the_basket_bound_holds() {
    let r = run(4, 25, 5, 3).unwrap();
    let mut made = r.made.clone();
    let mut eaten: Vec<String> = r.eaten.iter().map(|(_, b)| b.clone()).collect();
    made.sort();
    eaten.sort();
    assert_eq!(made.len(), 100);
    assert_eq!(made, eaten, "each bun made is eaten once, none invented");
    assert!(r.max_in_basket <= 3);
    let customers: std::collections::HashSet<_> = r.eaten.iter().map(|(c, _)| c).collect();
    assert!(customers.len() > 1, "the work was shared");
}
