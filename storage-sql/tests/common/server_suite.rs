//! The suite every SQL server runs (MariaDB, PostgreSQL): `server_suite!(VAR, "tag")` expands
//! to its tests against the server the environment variable `VAR` names (skipped loudly when
//! unset, failing under `CI=true`). Every test uses its own tables, named after `tag`.

/// Open a store on `var`'s server with tables named after `tag`, run `body`, drop the tables.
#[macro_export]
macro_rules! with_store {
    ($var:expr, $tag:expr, $threshold:expr, |$s:ident| $body:expr) => {{
        let Some($s) = server_store($var, $tag, $threshold).await else { return };
        $body;
        $s.drop_tables().await.unwrap();
    }};
}

#[macro_export]
macro_rules! server_suite {
    ($var:expr, $tag:literal) => {
        use sync_engine_core::conformance::{server_url, unique_ns};
        use sync_engine_core::SecretUrl;

        const VAR: &str = $var;

        #[tokio::test]
        async fn conformance_suite() {
            $crate::with_store!(VAR, concat!($tag, "_conf"), 256, |s| conformance(&s).await);
            $crate::with_store!(VAR, concat!($tag, "_conf2"), 2, |s| conformance(&s).await);
        }

        #[tokio::test]
        async fn payloads_and_ids_round_trip() {
            $crate::with_store!(VAR, concat!($tag, "_rt"), 256, |s| round_trips(&s).await);
        }

        #[tokio::test]
        async fn wide_nodes_split_and_stay_bounded() {
            $crate::with_store!(VAR, concat!($tag, "_wide"), 16, |s| wide_node(&s, 16, 2000).await);
        }

        #[tokio::test]
        async fn four_concurrent_writers_lose_no_merkle_update() {
            let Some(url) = server_url(VAR) else { return };
            let url = SecretUrl::new(url);
            let opts = options(concat!($tag, "_conc"), 4);
            let mut stores = Vec::new();
            for _ in 0..4 {
                stores.push(reopen(&url, &opts).await);
            }
            let cleanup = reopen(&url, &opts).await;
            concurrent_writers(stores).await;
            cleanup.drop_tables().await.unwrap();
        }

        #[tokio::test]
        async fn merkle_tree_equals_the_reference() {
            let Some(url) = server_url(VAR) else { return };
            for seed in 0..6u64 {
                let threshold = [2, 3, 8][seed as usize % 3];
                // Folds in slices of one change, of a few, and in one piece: the same tree.
                let slice = [1, 4, 8192][seed as usize / 2];
                let opts = sync_engine_sql::SqlOptions {
                    fold_slice_changes: slice,
                    ..options(concat!($tag, "_prop"), threshold)
                };
                let s = reopen(&SecretUrl::new(url.clone()), &opts).await;
                let ns = unique_ns("prop");
                let universe = id_universe(&ns, 30);
                let ops = random_batches(seed, &universe, 8, 30);
                check_against_reference(&s, &ns, &universe, &ops).await;
                s.drop_tables().await.unwrap();
            }
        }

        #[tokio::test]
        async fn batches_of_new_ids_and_of_stored_ids_alternate() {
            $crate::with_store!(VAR, concat!($tag, "_fresh"), 4, |s| {
                fresh::new_ids_then_stored_ids(&s).await
            });
        }

        #[tokio::test]
        async fn a_fold_larger_than_one_statement_writes_every_row() {
            let Some(url) = server_url(VAR) else { return };
            let opts = sync_engine_sql::SqlOptions {
                fold_changes: usize::MAX,
                ..options(concat!($tag, "_big"), 2)
            };
            let s = reopen(&SecretUrl::new(url), &opts).await;
            large_fold::a_fold_larger_than_a_statement(&s).await;
            s.drop_tables().await.unwrap();
        }

        #[tokio::test]
        async fn purge_removes_only_old_tombstones() {
            $crate::with_store!(VAR, concat!($tag, "_purge"), 256, |s| purge(&s).await);
        }
    };
}
