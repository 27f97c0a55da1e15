"""xconv_harness: the experiment harness of xconv (installed from the ``tasks/`` folder).

* the paper's tasks, one module each (:mod:`.classification`, :mod:`.generative`,
  :mod:`.dip`, :mod:`.segmentation`), LightningModules on :class:`.base.XConvTask` that
  declare their table metrics and baseline; data in :mod:`.data`, models in :mod:`.models`;
* the run: :mod:`.run` (Hydra config -> data, model, task -> Lightning -> ``summary.json``,
  defined in :mod:`.summary`), its checks (:mod:`.schema`, :mod:`.validate`, :mod:`.rules`),
  callbacks (:mod:`.monitor`, :mod:`.guard`, :mod:`.probe_cap`), resume files (:mod:`.resume`);
* :mod:`.studies`: the code behind every ``scripts/*.py``.

Imports point one way: ``scripts -> xconv_harness -> xconv``. The Hydra configs ship inside
as ``xconv_harness/conf`` (:mod:`.config_files`).
"""
