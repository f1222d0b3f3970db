"""Images in: decoding and listing (`images`), training/cache image sources (`sources`) and the
PASCAL VOC layout reader used by evaluation (`voc`)."""
