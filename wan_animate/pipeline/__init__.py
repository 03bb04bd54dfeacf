"""pipeline: the whole generation from preprocessed inputs (`generate.generate`), segment planning and chaining
(`segments`), the model's conditioning (`conditioning`), the resolution policy (`resolution`), colour-drift measurement
and correction (`color`) and resumable jobs (`resume`)."""
