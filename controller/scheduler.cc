// Placement of actors and placement-group bundles (see scheduler.h).
#include "controller/scheduler.h"

#include <algorithm>
#include <numeric>
#include <set>

namespace mariana::controller {

namespace {

double cpu_of(const Resources& r) {
  auto it = r.find("CPU");
  return it == r.end() ? 0.0 : it->second;
}

double size_of(const Resources& r) {
  double s = 0;
  for (auto& [_, v] : r) s += v;
  return s;
}

// Bundle indices, largest first (greedy placement of big bundles first).
std::vector<size_t> order_by_size(const std::vector<Resources>& bundles, const std::vector<size_t>& idx) {
  std::vector<size_t> out = idx;
  std::stable_sort(out.begin(), out.end(), [&](size_t a, size_t b) { return size_of(bundles[a]) > size_of(bundles[b]); });
  return out;
}

}  // namespace

std::string schedule_actor_node(const Resources& need, const std::vector<NodeView>& nodes) {
  const NodeView* best = nullptr;
  for (auto& n : nodes) {
    if (!resources_fit(need, n.available)) continue;
    if (!best || cpu_of(n.available) > cpu_of(best->available)) best = &n;
  }
  return best ? best->id : "";
}

Result<std::vector<std::string>> place_bundles(PgStrategy strategy, const std::vector<Resources>& bundles,
                                               const std::vector<std::string>& fixed,
                                               const std::vector<NodeView>& nodes) {
  std::vector<std::string> out = fixed;
  out.resize(bundles.size());
  std::vector<size_t> todo;
  for (size_t i = 0; i < bundles.size(); ++i)
    if (out[i].empty()) todo.push_back(i);
  if (todo.empty()) return out;
  std::vector<Resources> avail;
  for (auto& n : nodes) avail.push_back(n.available);
  auto node_index = [&](const std::string& id) -> int {
    for (size_t k = 0; k < nodes.size(); ++k)
      if (nodes[k].id == id) return static_cast<int>(k);
    return -1;
  };
  std::vector<int> used_count(nodes.size(), 0);
  for (size_t i = 0; i < bundles.size(); ++i)
    if (!out[i].empty()) {
      int k = node_index(out[i]);
      if (k >= 0) ++used_count[k];
    }
  auto fail = [&](size_t b) {
    return FailedPrecondition("placement group (" + std::string(pg_strategy_name(strategy)) + "): bundle " +
                              std::to_string(b) + " " + resources_string(bundles[b]) + " does not fit now");
  };

  if (strategy == PgStrategy::kStrictPack || strategy == PgStrategy::kPack) {
    // One node for everything left (the node of the fixed bundles for STRICT_PACK).
    Resources sum;
    for (size_t b : todo) resources_add(sum, bundles[b]);
    std::string target;
    for (size_t i = 0; i < bundles.size(); ++i)
      if (!out[i].empty()) target = out[i];
    int best = -1;
    for (size_t k = 0; k < nodes.size(); ++k) {
      if (strategy == PgStrategy::kStrictPack && !target.empty() && nodes[k].id != target) continue;
      if (!resources_fit(sum, avail[k])) continue;
      if (best < 0 || used_count[k] > used_count[best] ||
          (used_count[k] == used_count[best] && cpu_of(avail[k]) > cpu_of(avail[best])))
        best = static_cast<int>(k);
    }
    if (best >= 0) {
      for (size_t b : todo) out[b] = nodes[best].id;
      return out;
    }
    if (strategy == PgStrategy::kStrictPack) return fail(todo.front());
    // PACK, best effort: bundle by bundle, preferring nodes already used.
    for (size_t b : order_by_size(bundles, todo)) {
      int pick = -1;
      for (size_t k = 0; k < nodes.size(); ++k) {
        if (!resources_fit(bundles[b], avail[k])) continue;
        if (pick < 0 || used_count[k] > used_count[pick]) pick = static_cast<int>(k);
      }
      if (pick < 0) return fail(b);
      resources_add(avail[pick], bundles[b], -1.0);
      ++used_count[pick];
      out[b] = nodes[pick].id;
    }
    return out;
  }

  // SPREAD / STRICT_SPREAD: each bundle on the least-used node that fits (distinct for STRICT).
  for (size_t b : order_by_size(bundles, todo)) {
    int pick = -1;
    for (size_t k = 0; k < nodes.size(); ++k) {
      if (strategy == PgStrategy::kStrictSpread && used_count[k] > 0) continue;
      if (!resources_fit(bundles[b], avail[k])) continue;
      if (pick < 0 || used_count[k] < used_count[pick] ||
          (used_count[k] == used_count[pick] && cpu_of(avail[k]) > cpu_of(avail[pick])))
        pick = static_cast<int>(k);
    }
    if (pick < 0) return fail(b);
    resources_add(avail[pick], bundles[b], -1.0);
    ++used_count[pick];
    out[b] = nodes[pick].id;
  }
  return out;
}

Status check_feasible(PgStrategy strategy, const std::vector<Resources>& bundles, const std::vector<NodeView>& nodes) {
  if (nodes.empty()) return Status::Ok();
  std::vector<NodeView> empty = nodes;
  for (auto& n : empty) n.available = n.total;
  auto placed = place_bundles(strategy, bundles, std::vector<std::string>(bundles.size()), empty);
  if (placed.ok()) return Status::Ok();
  // Say which bundle fits on no node at all, or that the strategy itself cannot be met.
  for (size_t b = 0; b < bundles.size(); ++b) {
    bool any = false;
    for (auto& n : nodes) any = any || resources_fit(bundles[b], n.total);
    if (!any)
      return ResourceExhausted("infeasible: bundle " + std::to_string(b) + " " + resources_string(bundles[b]) +
                               " fits on none of the " + std::to_string(nodes.size()) + " nodes");
  }
  return ResourceExhausted(std::string("infeasible: ") + std::to_string(bundles.size()) + " bundles cannot be placed " +
                           pg_strategy_name(strategy) + " on the " + std::to_string(nodes.size()) + " nodes");
}

}  // namespace mariana::controller
