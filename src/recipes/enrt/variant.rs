//! Parameter groups as the recipes that assemble upstream's mixins by hand declare them: the
//! same group without some of its parameters (SimpleNetworkTunableRecipe has no `use_vfs`,
//! `dev_intr_cpu` or `perf_tool_cpu`), or with other defaults and choices for some
//! (ShortLivedConnectionsRecipe redeclares `net_perf_tool`, `perf_tests`, `ip_versions` and
//! `perf_msg_sizes`). The typed value is the whole group, so the base reads it as it reads the
//! full one; a parameter left out has its default there.

/// Declare `NAME(INNER)`: the [`ParamSet`](crate::recipes::typed::ParamSet) `INNER` without
/// the parameters named in `without`, each remaining declaration passed through `adjust`.
#[macro_export]
macro_rules! group_variant {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($inner:ty) {
            without: [$($w:literal),* $(,)?],
            adjust: $adjust:expr $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name(pub $inner);

        impl $crate::recipes::typed::ParamSet for $name {
            fn specs() -> Vec<$crate::schema::ParamSpec> {
                let without: &[&str] = &[$($w),*];
                let adjust: fn(&mut $crate::schema::ParamSpec) = $adjust;
                <$inner as $crate::recipes::typed::ParamSet>::specs()
                    .into_iter()
                    .filter(|s| !without.contains(&s.name))
                    .map(|mut s| {
                        adjust(&mut s);
                        s
                    })
                    .collect()
            }

            fn from_resolved(
                p: &$crate::schema::ResolvedParams,
            ) -> Result<Self, $crate::schema::SchemaError> {
                let all = <$inner as $crate::recipes::typed::ParamSet>::specs();
                <$inner as $crate::recipes::typed::ParamSet>::from_resolved(&p.with_defaults(&all))
                    .map($name)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::params::{parse_params, Value};
    use crate::recipes::typed::ParamSet;
    use crate::schema::{resolve, ParamType};

    crate::param_set! {
        struct Inner {
            param a: u32 = dflt(Int, 3i64, "a").range(0.0, 10.0),
            param b: Option<u32> = opt(Int, "b"),
            param c: String = dflt(Str, "x", "c"),
        }
    }

    crate::group_variant! {
        struct NoB(Inner) {
            without: ["b"],
            adjust: |s| {
                if s.name == "c" {
                    s.default = Some(Value::from("y"));
                    s.ty = ParamType::Choice(vec!["y", "z"]);
                }
            },
        }
    }

    fn no_b(given: &str) -> Result<NoB, String> {
        let specs = NoB::specs();
        let g = parse_params(given).map_err(|e| e.to_string())?;
        let r = resolve("R", &specs, g).map_err(|e| e.to_string())?;
        NoB::from_resolved(&r).map_err(|e| e.to_string())
    }

    #[test]
    fn left_out_parameters_keep_their_defaults_and_others_change() {
        let names: Vec<&str> = NoB::specs().iter().map(|s| s.name).collect();
        assert_eq!(names, ["a", "c"]);
        let v = no_b("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.0,
            Inner {
                a: 3,
                b: None,
                c: "y".into()
            }
        );
        let v = no_b("a=7;c='z'").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v.0.a, v.0.c.as_str()), (7, "z"));
        // Left out: not a parameter any more; changed choices: checked.
        let e = no_b("b=1").err().unwrap_or_default();
        assert!(
            e.contains("parameter 'b'") || e.contains("'b' is not a parameter"),
            "{e}"
        );
        assert!(no_b("c='x'").is_err());
        assert!(no_b("a=11").is_err());
    }
}
