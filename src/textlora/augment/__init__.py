"""Target-domain synthetic data: adapt a causal LM to unlabelled target texts, generate
class-prompted rows, and filter them. One module per step: ``lm``, ``adapt``, ``generate``, ``filter``."""
