"""AOTInductor: the package's export (`export`, compiled by `compile`), its segmenter (`runtime`) and
the C++ runner (`cpp/`, built by `cpp_build`)."""
