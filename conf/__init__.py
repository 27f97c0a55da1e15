"""The harness's Hydra configs (``_target_`` + arguments), a package so that every install carries them."""
