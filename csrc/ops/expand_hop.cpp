// One hop of the k-hop support of a batch of seed nodes (batched / sampled inference).
//
//   expand_hop(rowptr, col, seeds, fanout, random_seed, skip)
//       -> (frontier, local_rowptr, local_col, edge_ids)
//
// Row r of the local block belongs to seeds[r]. Its edges are the edges of row seeds[r] of the CSR graph:
//   * fanout == -1: all of them, in CSR order;
//   * fanout == k >= 0: k draws, uniformly WITH replacement, among the row's edges (a row with no edges gets none).
//     Draw t of node v uses a counter-based hash of (random_seed, v, t): the result is a pure function of the inputs,
//     independent of the thread count and of the other seeds in the batch (node v samples the same neighbours in
//     every batch for a given random_seed);
//   * skip[r] == true: row r is empty (the seed is not expanded: e.g. its hidden feature is cached).
// row_end (optional): rows need not be packed: row v is [rowptr[v], row_end[v]) (a growing graph whose rows live
// anywhere in a buffer with slack); num_nodes is then row_end.numel() (rowptr may be longer), and rowptr need not
// start at 0 nor end at col.numel() (every row read is checked to lie within [0, col.numel()]).
// frontier = seeds exactly as given (duplicates kept, so frontier[:S] == seeds and the self branch of a layer reads
// frontier rows 0..S-1), followed by the newly reached nodes, distinct and not among the seeds, in first-seen order
// (row-major over the local block). local_col[e] indexes into frontier (a duplicated seed maps to its first
// occurrence); edge_ids[e] is the global edge id (index into col / edge_weight) of local edge e, so that
// frontier[local_col] == col[edge_ids]. All outputs have the index dtype of rowptr.
// Output sizes depend on the data: the op is eager-only (its fake kernel allocates dynamic sizes so a trace that
// contains it still works, but torch.compile cannot specialise on them).
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("expand_hop(Tensor rowptr, Tensor col, Tensor seeds, int fanout, int random_seed, Tensor? skip,"
        " Tensor? row_end=None) -> (Tensor, Tensor, Tensor, Tensor)");
}
