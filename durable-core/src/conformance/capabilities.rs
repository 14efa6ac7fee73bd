//! The rule that a backend's declared capabilities are the truth, in both directions.

use super::{Ctx, MINUTE, bytes, token};
use crate::{Backend, BatchOp, Error, Operation, Result, Version};

/// Every optional operation whose capability the backend declares works (returns `Ok`, never
/// `NotSupported`); every one whose capability it does not declare returns `NotSupported`
/// naming the backend and the operation, and writes nothing.
pub async fn declared_capabilities_work(ctx: &Ctx) {
    let b = ctx.backend("declared").await;
    let caps = b.capabilities();
    assert_eq!(
        caps,
        ctx.capabilities(),
        "two backend values declare the same"
    );
    let v = b.persist("a", bytes("1")).await.expect("persist");

    let before = token(&*b).await;
    let result = b.changes_since(v).await.map(drop);
    check(&*b, caps.delta, Operation::Changes, result, before).await;
    let before = token(&*b).await;
    let result = b.subscribe().await.map(drop);
    check(&*b, caps.push, Operation::Subscribe, result, before).await;
    let before = token(&*b).await;
    let result = b.persist_if_absent("b", bytes("2")).await.map(drop);
    let declared = caps.insert_if_absent;
    check(&*b, declared, Operation::InsertIfAbsent, result, before).await;
    let before = token(&*b).await;
    let result = b.compare_and_swap("c", None, Some(bytes("3"))).await;
    let declared = caps.compare_and_swap;
    check(
        &*b,
        declared,
        Operation::CompareAndSwap,
        result.map(drop),
        before,
    )
    .await;
    let before = token(&*b).await;
    let result = b.pop("a").await.map(drop);
    check(&*b, caps.pop, Operation::Pop, result, before).await;
    let before = token(&*b).await;
    let result = b.increment("n", 1).await.map(drop);
    check(&*b, caps.increment, Operation::Increment, result, before).await;
    let before = token(&*b).await;
    let put = BatchOp::Put {
        key: "d".into(),
        value: bytes("4"),
    };
    let result = b.persist_batch(vec![put]).await.map(drop);
    check(&*b, caps.batch, Operation::Batch, result, before).await;
    let before = token(&*b).await;
    let result = b.now().await.map(drop);
    check(&*b, caps.expiry, Operation::Now, result, before).await;
    let before = token(&*b).await;
    let result = b.persist_expiring("e", bytes("5"), MINUTE).await;
    check(
        &*b,
        caps.expiry,
        Operation::PersistExpiring,
        result.map(drop),
        before,
    )
    .await;
    let before = token(&*b).await;
    let result = b.sweep().await.map(drop);
    check(&*b, caps.expiry, Operation::Sweep, result, before).await;
    let before = token(&*b).await;
    let result = b.clear().await.map(drop);
    check(&*b, caps.clear, Operation::Clear, result, before).await;
}

/// Asserts that `operation`, which returned `result` on the state `before`, worked if
/// `declared`, and otherwise was refused as not supported without writing anything.
async fn check(
    b: &dyn Backend,
    declared: bool,
    operation: Operation,
    result: Result<()>,
    before: Version,
) {
    match (declared, result) {
        (true, Ok(())) => {}
        (true, Err(error)) => {
            panic!("{operation} is declared but failed: {error:?}")
        }
        (
            false,
            Err(Error::NotSupported {
                backend,
                operation: named,
            }),
        ) => {
            assert_eq!(
                (backend.as_str(), named),
                (b.name(), operation),
                "NotSupported names the backend and the operation"
            );
            assert_eq!(
                token(b).await,
                before,
                "the undeclared {operation} changed the token"
            );
        }
        (false, other) => {
            panic!("{operation} is not declared, yet it gave {other:?} instead of NotSupported")
        }
    }
}
