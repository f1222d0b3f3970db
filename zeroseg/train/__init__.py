"""Label-free training: run config (`config`), the loop with `train_step` / `build_optimizer`
(`loop`), teacher targets (`targets`), the losses (`losses`) and runtime helpers (`runtime`)."""
