"""Label-free training: run config (`config`), the loop with `train_step` (`loop`), teacher targets
(`targets`), the losses (`losses`), the weight average (`ema`) and runtime helpers such as
`build_optimizer` (`runtime`)."""
