"""How well a model does: invocation accuracy on held-out instruction data (:mod:`.invocations`) and the papers' benchmarks (:mod:`.paper`)."""
