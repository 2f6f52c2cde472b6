//! The ENRT base (upstream `lnst/Recipes/ENRT/BaseEnrtRecipe.py` and its mixins).

pub mod params;
