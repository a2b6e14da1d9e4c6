//! Normalization of provider resources into Junction's common models (work in progress).
