//! The classic greenlet example, ported.
//!
//! Run with `cargo run --example greenlet_switch`; prints 12, 56, 34, 78.
//!
//! ```python
//! def test1():
//!     print(12); gr2.switch(); print(34); gr2.switch()
//! def test2():
//!     print(56); gr1.switch(); print(78)
//! gr1 = greenlet(test1); gr2 = greenlet(test2); gr1.switch()
//! ```

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use greenhouse::Greenlet;

/// Runs the example, writing each printed line into `out`.
fn run(out: Rc<RefCell<String>>) -> Result<(), greenhouse::Error> {
    let gr2_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let (o1, slot1) = (out.clone(), gr2_slot.clone());
    let gr1 = Greenlet::new(move |(): ()| -> Result<(), greenhouse::Error> {
        let gr2 = slot1.borrow().clone().expect("gr2 exists");
        writeln!(o1.borrow_mut(), "12").unwrap();
        gr2.switch::<(), ()>(())?;
        writeln!(o1.borrow_mut(), "34").unwrap();
        gr2.switch::<(), ()>(())?;
        Ok(())
    });
    let (o2, g1) = (out.clone(), gr1.clone());
    let gr2 = Greenlet::new(move |(): ()| -> Result<(), greenhouse::Error> {
        writeln!(o2.borrow_mut(), "56").unwrap();
        g1.switch::<(), ()>(())?;
        writeln!(o2.borrow_mut(), "78").unwrap();
        Ok(())
    });
    *gr2_slot.borrow_mut() = Some(gr2.clone());
    // gr2's parent is main, so when it finishes its Ok(()) comes back here.
    let r: Result<(), greenhouse::Error> = gr1.switch(())?;
    r?;
    drop(gr1);
    drop(gr2);
    Ok(())
}

fn main() -> Result<(), greenhouse::Error> {
    let out = Rc::new(RefCell::new(String::new()));
    run(out.clone())?;
    print!("{}", out.borrow());
    Ok(())
}

#[test]
fn prints_12_56_34_78() {
    let out = Rc::new(RefCell::new(String::new()));
    run(out.clone()).unwrap();
    assert_eq!(*out.borrow(), "12\n56\n34\n78\n");
}
