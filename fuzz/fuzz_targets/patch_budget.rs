//! Every patch engine stays within its budget, whatever the object and the patch: the
//! result is never larger than the document limit, an accepted patch never took more steps
//! than allowed, and the memory an engine allocates (counted here by the allocator, not by
//! the engine) stays proportional to its input and its limits. The input's first byte picks
//! the engine (JSON, merge, strategic merge, apply), the rest is two JSON documents: the
//! object, then the patch. The limits are small so that fuzzing reaches them.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use capstan_patch::{
    Budget, FieldManager, ObjectType, SchemaRef, json_patch_within, merge_patch_within,
    server_side_apply_within, size_of, strategic_merge_patch_within,
};
use capstan_apiserver::registry::schema::builtin_definitions;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Counts every byte allocated, so the work of a patch is measured independently of the
/// engines' own step counting.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; only adds a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout goes to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const MAX_DOCUMENT: usize = 16 * 1024;
const MAX_COPY: usize = 16 * 1024;
const MAX_OPERATIONS: usize = 64;
const MAX_STEPS: u64 = 200_000;

fn definition(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "io.k8s.api.core.v1.Pod",
        "Deployment" => "io.k8s.api.apps.v1.Deployment",
        "Service" => "io.k8s.api.core.v1.Service",
        "ConfigMap" => "io.k8s.api.core.v1.ConfigMap",
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&engine, rest)) = data.split_first() else {
        return;
    };
    let mut documents = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
    let (Some(Ok(target)), Some(Ok(patch))) = (documents.next(), documents.next()) else {
        return;
    };
    let schema = match target.get("kind").and_then(Value::as_str).and_then(definition) {
        Some(name) => SchemaRef::definition(builtin_definitions(), name),
        None => SchemaRef::none(),
    };
    let manager = FieldManager {
        name: "fuzz".to_owned(),
        api_version: "v1".to_owned(),
        time: "2026-01-01T00:00:00Z".to_owned(),
        subresource: None,
    };
    let mut budget = Budget::new(MAX_DOCUMENT, MAX_OPERATIONS, MAX_COPY, MAX_STEPS);
    let input = size_of(&target) + size_of(&patch);
    let before = ALLOCATED.load(Ordering::Relaxed);
    let result = match engine % 4 {
        0 => json_patch_within(&target, &patch, &mut budget).ok(),
        1 => merge_patch_within(&target, &patch, &mut budget).ok(),
        2 => strategic_merge_patch_within(&target, &patch, schema, &mut budget).ok(),
        _ => server_side_apply_within(
            Some(&target),
            &patch,
            &manager,
            engine & 4 != 0,
            ObjectType::new(schema),
            &mut budget,
        )
        .ok(),
    };
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    if let Some(result) = &result {
        let size = size_of(result);
        assert!(size <= MAX_DOCUMENT, "a {size}-byte result passed the {MAX_DOCUMENT}-byte budget");
        assert!(
            budget.steps_used() <= MAX_STEPS,
            "an accepted patch took {} steps",
            budget.steps_used()
        );
    }
    // Paths are formatted per field, up to the decoder's nesting depth (128) long.
    let bound = 256 * (input + MAX_DOCUMENT + MAX_COPY) + (1 << 20);
    assert!(
        allocated <= bound,
        "engine {} allocated {allocated} bytes for {input} bytes of input (bound {bound})",
        engine % 4
    );
});
