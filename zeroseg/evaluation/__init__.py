"""mIoU evaluation: the meter with mmseg semantics (`metrics`) and the data-set loop (`evaluate`)."""
