"""Stage 7: the assistant that joins the stages (inputs -> meta-response -> rendered outputs), and importers of official checkpoints."""
