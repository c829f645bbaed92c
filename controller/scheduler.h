// Placement decisions as pure functions over a snapshot of the nodes' free resources: where an
// actor goes, and where each bundle of a placement group goes (all bundles or none). The
// controller calls them on its event loop; they own nothing.
#pragma once

#include <string>
#include <vector>

#include "controller/tables.h"
#include "core/status.h"

namespace mariana::controller {

struct NodeView {
  std::string id;
  Resources total;
  Resources available;
};

// The node with the most free CPU among those where `need` fits now; "" if none.
std::string schedule_actor_node(const Resources& need, const std::vector<NodeView>& nodes);

// One node id per bundle, or FailedPrecondition when the bundles do not fit now. Bundles whose
// `fixed` entry is non-empty are already placed there (their resources are not in `available`);
// only the others are placed, honouring the strategy against the fixed ones. Atomic: on error
// nothing is placed.
Result<std::vector<std::string>> place_bundles(PgStrategy strategy, const std::vector<Resources>& bundles,
                                               const std::vector<std::string>& fixed,
                                               const std::vector<NodeView>& nodes);

// OK if the bundles could be placed on `nodes` when all of them are empty (their totals);
// otherwise ResourceExhausted saying which bundle cannot fit and why. With no nodes, OK (the
// request waits for nodes to join).
Status check_feasible(PgStrategy strategy, const std::vector<Resources>& bundles,
                      const std::vector<NodeView>& nodes);

}  // namespace mariana::controller
