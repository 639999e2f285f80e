//! Exact budgeted bit allocation: one candidate precision per layer, minimising the summed
//! sensitivity under a byte budget (stage A of two-stage mixed precision, issue 11 part 3;
//! `whittle allocate`, issue 13 part 1).
//!
//! The problem is the multiple-choice knapsack problem (MCKP): classes (layers) of items
//! (candidates) with a weight (stored bytes) and a cost (sensitivity); choose exactly one item per
//! class with total weight <= budget and least total cost. Items dominated within their class (no
//! fewer bytes and no lower cost than another item) are dropped first: some optimum never uses
//! them. [`solve`] then uses one of two exact methods:
//!
//! - **Dynamic programme over bytes in units of their gcd.** Byte counts are millions, but the
//!   packed format makes them multiples of a large unit: a `b`-bit matrix with `G` groups of 64
//!   stores `G (8b + 2)` bytes, so every difference between two candidates of a layer is a
//!   multiple of `8 gcd(G)` (1,152 bytes in tiny.en). Every reachable total is the sum of the
//!   smallest items plus a multiple of the gcd of those differences, so a programme over
//!   `(budget - smallest total) / unit` capacities is exact and small (about 10^5 to 10^6 cells
//!   for tiny.en). It is used up to [`DP_CELL_LIMIT`] cells.
//! - **Branch-and-bound** beyond that: depth-first; the bound at a node is the optimum of the LP
//!   relaxation of the free classes with the bytes left, solved greedily on each class's lower
//!   convex hull (start every class at its smallest item, take hull edges in order of cost saved
//!   per byte, the last one fractionally; Sinha and Zoltners 1979, "The multiple-choice knapsack
//!   problem", Operations Research 27(3)); the incumbent starts from the LP solution rounded down
//!   and greedily improved; items whose Lagrangian reduced cost at the LP's multiplier proves
//!   them unable to beat the incumbent are removed at the root; a node is cut when its bound
//!   cannot improve on the incumbent by more than a relative 1e-12. It stops with an error, never
//!   with an unproven answer, after [`NODE_LIMIT`] nodes (on tiny.en's real sensitivities at some
//!   budgets it does, which is why the programme comes first).
//!
//! Both are tested against brute-force enumeration on random instances.

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error as ThisError;

use super::bitmap::BitMap;
use super::sensitivity::{check_candidates, Metric, SensitivityFile};
use crate::error::{Error, Result};

/// One candidate of a class: what it costs in bytes and in sensitivity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    /// Stored bytes.
    pub bytes: u64,
    /// Sensitivity (finite, any sign).
    pub cost: f64,
}

/// A proven optimum.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// Index of the chosen item in each class.
    pub choice: Vec<usize>,
    /// Total bytes of the chosen items.
    pub bytes: u64,
    /// Total cost of the chosen items.
    pub cost: f64,
    /// How it was found.
    pub method: Method,
}

/// The exact method that found a [`Solution`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Dynamic programme over the bytes above the smallest choice, in units of their gcd.
    DynamicProgramme {
        /// Bytes per unit.
        unit: u64,
        /// Table cells (classes x capacity units).
        cells: u64,
    },
    /// Branch-and-bound with the LP bound.
    BranchAndBound {
        /// Nodes visited.
        nodes: u64,
    },
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::DynamicProgramme { unit, cells } => write!(
                f,
                "dynamic programme over {unit}-byte units ({cells} cells)"
            ),
            Method::BranchAndBound { nodes } => write!(f, "branch-and-bound ({nodes} nodes)"),
        }
    }
}

/// Table cells above which [`solve`] uses branch-and-bound instead of the dynamic programme.
pub const DP_CELL_LIMIT: u64 = 50_000_000;

/// Why no optimum came back.
#[derive(Debug, Clone, PartialEq, ThisError)]
pub enum Unsolvable {
    /// Even the smallest item of every class exceeds the budget.
    #[error(
        "the budget of {budget} bytes is below the smallest possible total, {min_bytes} bytes"
    )]
    Infeasible {
        /// The budget asked for.
        budget: u64,
        /// Sum of every class's smallest item.
        min_bytes: u64,
    },
    /// A class without items.
    #[error("class {0} has no candidates")]
    EmptyClass(usize),
    /// A cost that is NaN or infinite.
    #[error("class {class}, item {item}: the cost {cost} is not finite")]
    NonFinite {
        /// The class.
        class: usize,
        /// The item within it.
        item: usize,
        /// The value.
        cost: f64,
    },
    /// More than 256 candidates in one class.
    #[error("class {0} has more than 256 candidates")]
    TooManyItems(usize),
    /// The search was stopped before it proved an optimum.
    #[error("the search visited {0} nodes without proving an optimum")]
    NodeLimit(u64),
}

/// Nodes after which branch-and-bound gives up (see the module docs).
pub const NODE_LIMIT: u64 = 20_000_000;

/// A class reduced to its undominated items, bytes ascending and cost strictly descending.
#[derive(Debug)]
struct Class {
    /// `(bytes, cost, index in the caller's class)`.
    items: Vec<(u64, f64, usize)>,
}

impl Class {
    fn new(items: &[Item]) -> Self {
        let mut order: Vec<usize> = (0..items.len()).collect();
        // Bytes ascending, then cost ascending: the first of equal-byte items is the best one.
        order.sort_by(|&a, &b| {
            items[a]
                .bytes
                .cmp(&items[b].bytes)
                .then(items[a].cost.total_cmp(&items[b].cost))
        });
        let mut kept: Vec<(u64, f64, usize)> = Vec::new();
        for i in order {
            let Item { bytes, cost } = items[i];
            // Keep only items strictly cheaper than every smaller one.
            if kept.last().is_none_or(|&(_, c, _)| cost < c) {
                kept.push((bytes, cost, i));
            }
        }
        Self { items: kept }
    }
}

/// An edge of a class's lower convex hull: moving from one hull item to the next.
#[derive(Debug, Clone, Copy)]
struct Edge {
    class: usize,
    bytes: u64,
    /// Cost change, negative.
    cost: f64,
}

impl Edge {
    /// Cost saved per byte.
    fn gain(&self) -> f64 {
        -self.cost / self.bytes as f64
    }
}

/// Hull edges of `class` (index `c`): gains strictly decreasing along the hull.
fn hull_edges(c: usize, class: &Class) -> Vec<Edge> {
    let mut hull: Vec<(u64, f64)> = Vec::new();
    for &(bytes, cost, _) in &class.items {
        while hull.len() >= 2 {
            let (b0, c0) = hull[hull.len() - 2];
            let (b1, c1) = hull[hull.len() - 1];
            // Drop the middle point unless the gain from it onwards is strictly smaller.
            let gain_in = (c0 - c1) / (b1 - b0) as f64;
            let gain_out = (c1 - cost) / (bytes - b1) as f64;
            if gain_out >= gain_in {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push((bytes, cost));
    }
    hull.windows(2)
        .map(|w| Edge {
            class: c,
            bytes: w[1].0 - w[0].0,
            cost: w[1].1 - w[0].1,
        })
        .collect()
}

/// The search state shared by every node.
struct Search<'a> {
    classes: &'a [Class],
    /// Classes in branching order.
    order: Vec<usize>,
    /// Position of each class in `order`: a class is free at depth `d` when `position >= d`.
    position: Vec<usize>,
    /// Hull edges of every class, by gain descending.
    edges: Vec<Edge>,
    /// Over `order[d..]`: summed bytes and cost of the smallest items.
    suffix_bytes: Vec<u64>,
    suffix_cost: Vec<f64>,
    best_cost: f64,
    best: Vec<usize>,
    current: Vec<usize>,
    nodes: u64,
}

impl<'a> Search<'a> {
    /// A search over `classes` with no incumbent yet.
    fn new(classes: &'a [Class]) -> Self {
        let mut edges: Vec<Edge> = classes
            .iter()
            .enumerate()
            .flat_map(|(c, class)| hull_edges(c, class))
            .collect();
        // Gain descending; within a class gains strictly decrease, so a stable sort keeps
        // each class's edges in hull order.
        edges.sort_by(|a, b| b.gain().total_cmp(&a.gain()));
        // Branch first on the classes with the widest byte range (the decisions that matter
        // most).
        let mut order: Vec<usize> = (0..classes.len()).collect();
        let span = |c: &Class| c.items.last().map_or(0, |l| l.0) - c.items[0].0;
        order.sort_by(|&a, &b| span(&classes[b]).cmp(&span(&classes[a])).then(a.cmp(&b)));
        let mut position = vec![0; classes.len()];
        for (d, &c) in order.iter().enumerate() {
            position[c] = d;
        }
        let n = classes.len();
        let mut suffix_bytes = vec![0u64; n + 1];
        let mut suffix_cost = vec![0f64; n + 1];
        for d in (0..n).rev() {
            let (bytes, cost, _) = classes[order[d]].items[0];
            suffix_bytes[d] = suffix_bytes[d + 1] + bytes;
            suffix_cost[d] = suffix_cost[d + 1] + cost;
        }
        Search {
            classes,
            order,
            position,
            edges,
            suffix_bytes,
            suffix_cost,
            best_cost: f64::INFINITY,
            best: vec![0; n],
            current: vec![0; n],
            nodes: 0,
        }
    }

    /// The LP's optimal multiplier of the byte constraint: the gain of the first hull edge
    /// that does not fit whole (0 when every edge fits).
    fn critical_gain(&self, budget: u64) -> f64 {
        let mut cap = budget - self.suffix_bytes[0];
        for e in &self.edges {
            if e.bytes > cap {
                return e.gain();
            }
            cap -= e.bytes;
        }
        0.0
    }

    /// LP relaxation optimum of the classes free at `depth` with `left` bytes, and the hull
    /// item each ends on when the fractional edge is dropped (a feasible integral choice).
    fn lp_bound(&self, depth: usize, left: u64) -> Option<(f64, Vec<(usize, u64)>)> {
        let mut cap = left.checked_sub(self.suffix_bytes[depth])?;
        let mut cost = self.suffix_cost[depth];
        let mut steps = Vec::new();
        for e in &self.edges {
            if self.position[e.class] < depth {
                continue;
            }
            if e.bytes <= cap {
                cap -= e.bytes;
                cost += e.cost;
                steps.push((e.class, e.bytes));
            } else {
                cost += e.cost * (cap as f64 / e.bytes as f64);
                break;
            }
        }
        Some((cost, steps))
    }

    /// The integral choice of the LP solution at the root: per class, the undominated item
    /// reached after the whole edges taken.
    fn rounded(&self, steps: &[(usize, u64)]) -> Vec<usize> {
        let mut extra = vec![0u64; self.classes.len()];
        for &(c, bytes) in steps {
            extra[c] += bytes;
        }
        self.classes
            .iter()
            .zip(extra)
            .map(|(class, extra)| {
                let target = class.items[0].0 + extra;
                class
                    .items
                    .iter()
                    .position(|&(b, _, _)| b == target)
                    .expect("hull items are items")
            })
            .collect()
    }

    fn dfs(&mut self, depth: usize, cost: f64, left: u64) -> Result<(), Unsolvable> {
        self.nodes += 1;
        if self.nodes > NODE_LIMIT {
            return Err(Unsolvable::NodeLimit(NODE_LIMIT));
        }
        if depth == self.order.len() {
            if cost < self.best_cost {
                self.best_cost = cost;
                self.best.clone_from(&self.current);
            }
            return Ok(());
        }
        let Some((bound, _)) = self.lp_bound(depth, left) else {
            return Ok(());
        };
        // Cut when the subtree cannot improve on the incumbent by more than a relative 1e-12
        // (float rounding of the bound is far below that).
        let margin = 1e-12 * (1.0 + self.best_cost.abs());
        if cost + bound >= self.best_cost - margin {
            return Ok(());
        }
        let c = self.order[depth];
        let rest_min = self.suffix_bytes[depth + 1];
        // Cheapest (largest) items first: good incumbents early.
        for k in (0..self.classes[c].items.len()).rev() {
            let (bytes, item_cost, _) = self.classes[c].items[k];
            if bytes + rest_min > left {
                continue;
            }
            self.current[c] = k;
            self.dfs(depth + 1, cost + item_cost, left - bytes)?;
        }
        Ok(())
    }
}

/// Choose one item per class, total bytes <= `budget`, least total cost: a proven optimum.
pub fn solve(classes: &[Vec<Item>], budget: u64) -> Result<Solution, Unsolvable> {
    solve_with(classes, budget, DP_CELL_LIMIT)
}

/// [`solve`] with the dynamic programme used up to `dp_cell_limit` cells.
fn solve_with(
    classes: &[Vec<Item>],
    budget: u64,
    dp_cell_limit: u64,
) -> Result<Solution, Unsolvable> {
    let reduced = reduce(classes, budget)?;
    let (unit, capacity) = dp_units(&reduced, budget);
    let cells = (capacity + 1).saturating_mul(reduced.len() as u64);
    let (choice, method) = if cells <= dp_cell_limit {
        (
            dynamic_programme(&reduced, unit, capacity as usize),
            Method::DynamicProgramme { unit, cells },
        )
    } else {
        branch_and_bound(&reduced, budget)?
    };
    Ok(solution(classes, &reduced, &choice, method))
}

/// The caller's indices, bytes and cost of a choice over the reduced classes.
fn solution(
    classes: &[Vec<Item>],
    reduced: &[Class],
    choice: &[usize],
    method: Method,
) -> Solution {
    let choice: Vec<usize> = choice
        .iter()
        .zip(reduced)
        .map(|(&k, class)| class.items[k].2)
        .collect();
    let bytes = choice.iter().zip(classes).map(|(&k, c)| c[k].bytes).sum();
    let cost = choice.iter().zip(classes).map(|(&k, c)| c[k].cost).sum();
    Solution {
        choice,
        bytes,
        cost,
        method,
    }
}

/// The unit (gcd of every item's bytes above its class's smallest) and the capacity in units
/// above the smallest choice. Every reachable total is `min_bytes + k * unit`, so the
/// programme over units is exact.
fn dp_units(classes: &[Class], budget: u64) -> (u64, u64) {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let unit = classes
        .iter()
        .flat_map(|c| c.items.iter().map(|i| i.0 - c.items[0].0))
        .fold(0, gcd)
        .max(1);
    let min_bytes: u64 = classes.iter().map(|c| c.items[0].0).sum();
    (unit, (budget - min_bytes) / unit)
}

/// Exact dynamic programme: `best[w]` is the least cost of the classes so far with at most `w`
/// units above their smallest items; the choices are kept per class for the backtrack.
fn dynamic_programme(classes: &[Class], unit: u64, capacity: usize) -> Vec<usize> {
    let mut best = vec![0f64; capacity + 1];
    let mut choices: Vec<Vec<u8>> = Vec::with_capacity(classes.len());
    for class in classes {
        let base = class.items[0].0;
        let units: Vec<usize> = class
            .items
            .iter()
            .map(|i| ((i.0 - base) / unit) as usize)
            .collect();
        let mut next = vec![f64::INFINITY; capacity + 1];
        let mut choice = vec![0u8; capacity + 1];
        for (w, slot) in next.iter_mut().enumerate() {
            for (k, (&u, item)) in units.iter().zip(&class.items).enumerate() {
                if u <= w {
                    let v = best[w - u] + item.1;
                    if v < *slot {
                        *slot = v;
                        choice[w] = k as u8;
                    }
                }
            }
        }
        best = next;
        choices.push(choice);
    }
    let mut w = capacity;
    let mut picked = vec![0; classes.len()];
    for (c, class) in classes.iter().enumerate().rev() {
        let k = choices[c][w] as usize;
        picked[c] = k;
        w -= ((class.items[k].0 - class.items[0].0) / unit) as usize;
    }
    picked
}

/// Undominated classes after the input checks.
fn reduce(classes: &[Vec<Item>], budget: u64) -> Result<Vec<Class>, Unsolvable> {
    for (c, items) in classes.iter().enumerate() {
        if items.is_empty() {
            return Err(Unsolvable::EmptyClass(c));
        }
        if let Some((i, item)) = items.iter().enumerate().find(|(_, x)| !x.cost.is_finite()) {
            return Err(Unsolvable::NonFinite {
                class: c,
                item: i,
                cost: item.cost,
            });
        }
    }
    if let Some(c) = classes.iter().position(|items| items.len() > 256) {
        return Err(Unsolvable::TooManyItems(c));
    }
    let reduced: Vec<Class> = classes.iter().map(|items| Class::new(items)).collect();
    let min_bytes: u64 = reduced.iter().map(|c| c.items[0].0).sum();
    if min_bytes > budget {
        return Err(Unsolvable::Infeasible { budget, min_bytes });
    }
    Ok(reduced)
}

/// Depth-first branch-and-bound (see the module docs) over reduced, feasible classes: the
/// choice (indices into the reduced classes) and the nodes visited.
fn branch_and_bound(reduced: &[Class], budget: u64) -> Result<(Vec<usize>, Method), Unsolvable> {
    // Root: LP solution, incumbent, and the items the Lagrangian bound rules out.
    let root = Search::new(reduced);
    let (_, steps) = root
        .lp_bound(0, budget)
        .expect("the smallest items fit, checked above");
    let mut incumbent = root.rounded(&steps);
    improve(reduced, &mut incumbent, budget);
    let incumbent_cost: f64 = incumbent
        .iter()
        .zip(reduced)
        .map(|(&k, class)| class.items[k].1)
        .sum();
    let lambda = root.critical_gain(budget);
    let kept = fix_by_reduced_cost(reduced, &incumbent, incumbent_cost, lambda, budget);
    let mut search = Search::new(&kept);
    search.best = incumbent
        .iter()
        .zip(reduced)
        .zip(&kept)
        .map(|((&k, class), small)| {
            let original = class.items[k].2;
            small
                .items
                .iter()
                .position(|item| item.2 == original)
                .expect("the incumbent's items are kept")
        })
        .collect();
    search.best_cost = incumbent_cost;
    search.dfs(0, 0.0, budget)?;
    // Back to indices into `reduced`.
    let choice = search
        .best
        .iter()
        .zip(&kept)
        .zip(reduced)
        .map(|((&k, small), class)| {
            let original = small.items[k].2;
            class
                .items
                .iter()
                .position(|item| item.2 == original)
                .expect("kept items come from the class")
        })
        .collect();
    Ok((
        choice,
        Method::BranchAndBound {
            nodes: search.nodes,
        },
    ))
}

/// Greedy improvement of a feasible choice: repeatedly take the single-class change that saves
/// the most cost within the bytes left.
fn improve(classes: &[Class], choice: &mut [usize], budget: u64) {
    let mut used: u64 = choice.iter().zip(classes).map(|(&k, c)| c.items[k].0).sum();
    loop {
        let mut best: Option<(usize, usize, f64)> = None;
        for (c, class) in classes.iter().enumerate() {
            let (bytes, cost, _) = class.items[choice[c]];
            for (k, &(b, v, _)) in class.items.iter().enumerate() {
                let fits = used - bytes + b <= budget;
                if fits && v < cost && best.is_none_or(|(_, _, s)| cost - v > s) {
                    best = Some((c, k, cost - v));
                }
            }
        }
        let Some((c, k, _)) = best else {
            return;
        };
        used = used - classes[c].items[choice[c]].0 + classes[c].items[k].0;
        choice[c] = k;
    }
}

/// Drops every item that cannot be in a solution better than the incumbent. With a multiplier
/// `lambda >= 0` on the byte constraint, `L = sum_i min_k (c_k + lambda w_k) - lambda W` is a
/// lower bound on every feasible solution's cost, and one that uses item `k` of class `i`
/// costs at least `L + (c_k + lambda w_k - min_j (c_j + lambda w_j))` (Lagrangian reduced-cost
/// fixing). The incumbent's items always stay.
fn fix_by_reduced_cost(
    classes: &[Class],
    incumbent: &[usize],
    incumbent_cost: f64,
    lambda: f64,
    budget: u64,
) -> Vec<Class> {
    let priced = |&(b, c, _): &(u64, f64, usize)| c + lambda * b as f64;
    let floors: Vec<f64> = classes
        .iter()
        .map(|class| class.items.iter().map(priced).fold(f64::INFINITY, f64::min))
        .collect();
    let bound = floors.iter().sum::<f64>() - lambda * budget as f64;
    let margin = 1e-9 * (1.0 + incumbent_cost.abs() + bound.abs());
    classes
        .iter()
        .zip(&floors)
        .zip(incumbent)
        .map(|((class, &floor), &chosen)| Class {
            items: class
                .items
                .iter()
                .enumerate()
                .filter(|&(k, item)| {
                    k == chosen || bound + priced(item) - floor <= incumbent_cost + margin
                })
                .map(|(_, item)| *item)
                .collect(),
        })
        .collect()
}

/// What to allocate from a sensitivity file.
#[derive(Debug, Clone)]
pub struct AllocationRequest {
    /// Budget as average stored bits per quantized weight, codes and f16 scales counted.
    pub budget_bits: f64,
    /// Candidate widths to choose from (`None`: every candidate in the file).
    pub candidates: Option<Vec<u8>>,
    /// Narrowest width allowed.
    pub min_bits: u8,
}

/// The width chosen for one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerChoice {
    /// Tensor path.
    pub name: String,
    /// Weights.
    pub params: u64,
    /// Chosen bit width.
    pub bits: u8,
    /// Its stored bytes.
    pub bytes: u64,
    /// Its sensitivity.
    pub score: f64,
}

/// An optimal allocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocation {
    /// The sensitivity minimised.
    pub metric: Metric,
    /// Group length of every layer's scales.
    pub group: usize,
    /// Widths allowed (after `min_bits`).
    pub candidates: Vec<u8>,
    /// The budget asked for, in average bits per weight.
    pub budget_bits: f64,
    /// The budget in bytes: `floor(budget_bits * params / 8)`.
    pub budget_bytes: u64,
    /// Weights of every quantized layer.
    pub params: u64,
    /// Stored bytes of the allocation.
    pub bytes: u64,
    /// Summed sensitivity of the allocation (the minimum).
    pub score: f64,
    /// The exact method that found it.
    pub method: Method,
    /// One choice per layer, in the file's order.
    pub layers: Vec<LayerChoice>,
}

impl Allocation {
    /// Achieved average stored bits per quantized weight.
    pub fn average_bits(&self) -> f64 {
        8.0 * self.bytes as f64 / self.params as f64
    }

    /// Per chosen width: layers and weights.
    pub fn histogram(&self) -> BTreeMap<u8, (usize, u64)> {
        let mut h = BTreeMap::new();
        for l in &self.layers {
            let e = h.entry(l.bits).or_insert((0, 0));
            e.0 += 1;
            e.1 += l.params;
        }
        h
    }

    /// The allocation as a bit map TOML (see [`super::bitmap`]): every layer by its exact path,
    /// no `default` (a model with other layers is refused, not left partly float), and a
    /// comment header saying where it came from. `source` names the sensitivity file. The text
    /// is returned with the [`BitMap`] it parses to, so what is written is known to load.
    pub fn bit_map(&self, source: &str, sens: &SensitivityFile) -> Result<(String, BitMap)> {
        let text = self.bit_map_text(source, sens);
        let value: serde_json::Value =
            toml::from_str(&text).map_err(|e| Error::config("allocated bit map", e.to_string()))?;
        let map = BitMap::from_value(&value, source)?;
        Ok((text, map))
    }

    fn bit_map_text(&self, source: &str, sens: &SensitivityFile) -> String {
        let clean = |s: &str| s.replace(|c: char| c.is_control(), " ");
        let histogram: Vec<String> = self
            .histogram()
            .iter()
            .map(|(bits, (layers, _))| format!("{bits} bits x {layers}"))
            .collect();
        let mut out = format!(
            "# Bit map from `whittle allocate` (exact budgeted allocation, docs/sensitivity.md).\n\
             # source: {} (metric {}, model {}, {} utterances of {})\n\
             # budget: {} average bits per quantized weight (codes + f16 scales) = {} bytes\n\
             # achieved: {:.4} average bits, {} bytes; {}\n\
             # total sensitivity (sum of {}): {:.6e}\n\
             # candidates: {:?}, group {}; exact: {}\n\
             # Every quantizable layer is named by its exact path; there is no `default`.\n\
             [layers]\n",
            clean(source),
            self.metric.name(),
            clean(&sens.model),
            sens.utterances,
            clean(&sens.data),
            self.budget_bits,
            self.budget_bytes,
            self.average_bits(),
            self.bytes,
            histogram.join(", "),
            self.metric.name(),
            self.score,
            self.candidates,
            self.group,
            self.method,
        );
        out.push_str(&super::bitmap::layers_toml(self.layers.iter().map(|l| {
            (
                l.name.as_str(),
                super::bitmap::LayerFormat::uniform(l.bits, Some(self.group)),
            )
        })));
        out
    }
}

/// The widest single candidate of `candidates` whose uniform use fits `budget_bytes`, with its
/// summed sensitivity: the uniform-precision point of comparison.
pub fn best_uniform(
    sens: &SensitivityFile,
    candidates: &[u8],
    budget_bytes: u64,
) -> Option<(u8, f64)> {
    candidates.iter().rev().find_map(|&bits| {
        let mut bytes = 0u64;
        let mut score = 0.0;
        for layer in &sens.layers {
            let c = layer.candidates.iter().find(|c| c.bits == bits)?;
            bytes = bytes.saturating_add(c.bytes);
            score += c.score(sens.metric)?;
        }
        (bytes <= budget_bytes).then_some((bits, score))
    })
}

/// The allocation of least summed sensitivity within the budget (see the module docs). The
/// budget in bytes is `floor(budget_bits * params / 8)`, `params` the weights of every layer in
/// the file (all are quantized, at `min_bits` or more).
pub fn allocate(sens: &SensitivityFile, request: &AllocationRequest) -> Result<Allocation> {
    let b = request.budget_bits;
    if !(b.is_finite() && b > 0.0) {
        return Err(Error::config(
            "--budget-bits",
            format!("{b}: expected a positive number of bits per weight"),
        ));
    }
    if !(2..=8).contains(&request.min_bits) {
        return Err(Error::config(
            "--min-bits",
            format!("{}: expected 2..=8", request.min_bits),
        ));
    }
    let wanted = match &request.candidates {
        Some(c) => check_candidates(c)?,
        None => sens.candidates.clone(),
    };
    if let Some(missing) = wanted.iter().find(|b| !sens.candidates.contains(b)) {
        return Err(Error::config(
            "--candidates",
            format!(
                "{missing} bits was not measured (the sensitivity file has {:?})",
                sens.candidates
            ),
        ));
    }
    let allowed: Vec<u8> = wanted
        .into_iter()
        .filter(|&b| b >= request.min_bits)
        .collect();
    if allowed.is_empty() {
        return Err(Error::config(
            "--min-bits",
            format!("no candidate is {} bits or wider", request.min_bits),
        ));
    }
    let params: u64 = sens.layers.iter().map(|l| l.params).sum();
    let mut classes = Vec::with_capacity(sens.layers.len());
    let mut kept = Vec::with_capacity(sens.layers.len());
    for layer in &sens.layers {
        let mut items = Vec::new();
        let mut scores = Vec::new();
        for c in layer
            .candidates
            .iter()
            .filter(|c| allowed.contains(&c.bits))
        {
            let score = c.score(sens.metric).ok_or_else(|| {
                Error::config(
                    &layer.name,
                    format!("{} bits has no `{}` score", c.bits, sens.metric.name()),
                )
            })?;
            items.push(Item {
                bytes: c.bytes,
                cost: score,
            });
            scores.push((c.bits, c.bytes, score));
        }
        classes.push(items);
        kept.push(scores);
    }
    let budget_bytes = (b * params as f64 / 8.0).floor() as u64;
    let solution = solve(&classes, budget_bytes).map_err(|e| match e {
        Unsolvable::Infeasible { min_bytes, .. } => {
            // Rounded up, so that passing the printed value is feasible.
            let min_bits = (8.0 * min_bytes as f64 / params as f64 * 1e4).ceil() / 1e4;
            Error::config(
                format!("--budget-bits {b}"),
                format!(
                    "{budget_bytes} bytes cannot hold every layer at {} bits: the minimum \
                     achievable budget is {min_bits} bits per weight ({min_bytes} bytes)",
                    allowed[0]
                ),
            )
        }
        other => Error::config("allocate", other.to_string()),
    })?;
    let layers = sens
        .layers
        .iter()
        .zip(&kept)
        .zip(&solution.choice)
        .map(|((layer, scores), &k)| LayerChoice {
            name: layer.name.clone(),
            params: layer.params,
            bits: scores[k].0,
            bytes: scores[k].1,
            score: scores[k].2,
        })
        .collect();
    Ok(Allocation {
        metric: sens.metric,
        group: sens.group,
        candidates: allowed,
        budget_bits: b,
        budget_bytes,
        params,
        bytes: solution.bytes,
        score: solution.cost,
        method: solution.method,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Every combination: the least cost within the budget, `None` when nothing fits.
    fn brute_force(classes: &[Vec<Item>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut index = vec![0usize; classes.len()];
        loop {
            let bytes: u64 = index.iter().zip(classes).map(|(&k, c)| c[k].bytes).sum();
            if bytes <= budget {
                let cost: f64 = index.iter().zip(classes).map(|(&k, c)| c[k].cost).sum();
                best = Some(best.map_or(cost, |b: f64| b.min(cost)));
            }
            // Next combination (odometer).
            let mut d = 0;
            loop {
                if d == classes.len() {
                    return best;
                }
                index[d] += 1;
                if index[d] < classes[d].len() {
                    break;
                }
                index[d] = 0;
                d += 1;
            }
        }
    }

    /// Random classes: bytes from a few sizes (so ties and equal-byte items occur), costs that
    /// mostly fall with bytes but not always, some exactly equal.
    fn instance(rng: &mut ChaCha8Rng) -> Vec<Vec<Item>> {
        let classes = rng.random_range(1..=6);
        (0..classes)
            .map(|_| {
                let unit = rng.random_range(1..=40u64);
                let k = rng.random_range(1..=5);
                (0..k)
                    .map(|_| {
                        let bits = rng.random_range(2..=8u64);
                        let bytes = unit * (4 * bits + 1);
                        let cost = if rng.random_bool(0.1) {
                            1.0
                        } else {
                            (rng.random_range(0.0..1.0f64) + 0.2) * 30.0 / (bits * bits) as f64
                        };
                        Item { bytes, cost }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn equals_brute_force_on_random_instances() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut solved = 0;
        for seed in 0..3000 {
            let classes = instance(&mut rng);
            let min: u64 = classes
                .iter()
                .map(|c| c.iter().map(|i| i.bytes).min().unwrap())
                .sum();
            let max: u64 = classes
                .iter()
                .map(|c| c.iter().map(|i| i.bytes).max().unwrap())
                .sum();
            let budget = rng.random_range(min.saturating_sub(10)..=max + 10);
            let expected = brute_force(&classes, budget);
            // Both exact methods: the dynamic programme and branch-and-bound.
            for limit in [u64::MAX, 0] {
                match (solve_with(&classes, budget, limit), expected) {
                    (Ok(s), Some(best)) => {
                        assert_eq!(
                            matches!(s.method, Method::DynamicProgramme { .. }),
                            limit > 0,
                            "seed {seed}"
                        );
                        solved += 1;
                        assert!(s.bytes <= budget, "seed {seed}: over budget");
                        let cost: f64 =
                            s.choice.iter().zip(&classes).map(|(&k, c)| c[k].cost).sum();
                        let bytes: u64 = s
                            .choice
                            .iter()
                            .zip(&classes)
                            .map(|(&k, c)| c[k].bytes)
                            .sum();
                        assert_eq!(bytes, s.bytes, "seed {seed}");
                        assert!((cost - s.cost).abs() < 1e-12, "seed {seed}");
                        assert!(
                            (s.cost - best).abs() <= 1e-9 * (1.0 + best.abs()),
                            "seed {seed}: {} vs brute force {best} for {classes:?} budget {budget}",
                            s.cost
                        );
                    }
                    (Err(Unsolvable::Infeasible { min_bytes, .. }), None) => {
                        assert_eq!(min_bytes, min, "seed {seed}");
                    }
                    (got, want) => panic!("seed {seed}: {got:?} but brute force says {want:?}"),
                }
            }
        }
        assert!(solved > 5000, "only {solved} feasible instances");
    }

    /// Forty classes with nearly equal gains (the hard case for the bound) solve exactly by both
    /// methods; checked against a plain dynamic programme over bytes.
    #[test]
    fn equals_a_byte_dp_on_larger_instances() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for seed in 0..20 {
            let classes: Vec<Vec<Item>> = (0..40)
                .map(|_| {
                    let unit = rng.random_range(1..=6u64);
                    [2u64, 3, 4, 5, 6, 8]
                        .iter()
                        .map(|&b| Item {
                            bytes: unit * (4 * b + 1),
                            cost: unit as f64
                                * (2f64).powi(-(b as i32))
                                * rng.random_range(0.8..1.2),
                        })
                        .collect()
                })
                .collect();
            let min: u64 = classes.iter().map(|c| c[0].bytes).sum();
            let max: u64 = classes.iter().map(|c| c[5].bytes).sum();
            let budget = (min + max) / 2 + rng.random_range(0..50);
            // dp[w] = least cost with total bytes exactly w.
            let mut dp = vec![f64::INFINITY; budget as usize + 1];
            dp[0] = 0.0;
            for class in &classes {
                let mut next = vec![f64::INFINITY; dp.len()];
                for (w, &c) in dp.iter().enumerate().filter(|(_, c)| c.is_finite()) {
                    for item in class {
                        let v = w + item.bytes as usize;
                        if v < next.len() {
                            next[v] = next[v].min(c + item.cost);
                        }
                    }
                }
                dp = next;
            }
            let best = dp.iter().copied().fold(f64::INFINITY, f64::min);
            for limit in [u64::MAX, 0] {
                let s = solve_with(&classes, budget, limit).unwrap();
                assert!(s.bytes <= budget);
                assert!(
                    (s.cost - best).abs() <= 1e-9 * best.abs(),
                    "seed {seed}: {} vs {best} ({})",
                    s.cost,
                    s.method
                );
            }
        }
    }

    #[test]
    fn infeasible_budget_names_the_minimum() {
        let classes = vec![
            vec![
                Item {
                    bytes: 10,
                    cost: 1.0,
                },
                Item {
                    bytes: 20,
                    cost: 0.5,
                },
            ],
            vec![Item {
                bytes: 7,
                cost: 2.0,
            }],
        ];
        assert_eq!(
            solve(&classes, 16),
            Err(Unsolvable::Infeasible {
                budget: 16,
                min_bytes: 17
            })
        );
        let s = solve(&classes, 17).unwrap();
        assert_eq!((s.choice, s.bytes), (vec![0, 0], 17));
        assert!(matches!(
            solve(&[vec![]], 5),
            Err(Unsolvable::EmptyClass(0))
        ));
        let nan = vec![vec![Item {
            bytes: 1,
            cost: f64::NAN,
        }]];
        assert!(matches!(
            solve(&nan, 5),
            Err(Unsolvable::NonFinite {
                class: 0,
                item: 0,
                ..
            })
        ));
    }

    /// A dominated item (more bytes, no less cost) is never chosen, even with room for it;
    /// a non-convex class takes its middle item when the budget allows exactly that.
    #[test]
    fn dominated_and_non_convex_items() {
        let classes = vec![vec![
            Item {
                bytes: 10,
                cost: 5.0,
            },
            Item {
                bytes: 30,
                cost: 5.0,
            },
            Item {
                bytes: 20,
                cost: 4.9,
            },
            Item {
                bytes: 40,
                cost: 0.0,
            },
        ]];
        assert_eq!(solve(&classes, 35).unwrap().choice, vec![2]);
        assert_eq!(solve(&classes, 40).unwrap().choice, vec![3]);
    }
}
