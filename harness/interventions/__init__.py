"""Forward passes with reads and edits of the residual stream (backends), and the
depth-efficiency measurements built on them: sublayer contributions, layer skipping,
residual erasure and integrated gradients."""
