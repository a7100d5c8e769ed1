//! Tidy check: no crate of the workspace has a circle of imports between its modules.
//!
//! A module that is part of an import circle cannot be understood alone: to read one file
//! of the circle you must read all of them, and none can be moved or tested without the
//! rest. ARCHITECTURE.md describes the crates by their files, each with its own job; that
//! reading only holds while the files' references run one way. So every module file
//! reached from a crate root (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`) through `mod`
//! declarations is parsed, each path it names (`use crate::…`, `super::…`, `child::…`) is
//! resolved to the module file that defines what it names, and any strongly connected
//! group of files fails the test with one example reference per edge, so a developer can
//! see what to move.
//!
//! Two rules decide which references are edges:
//!
//! - Re-exports are followed. A path that reaches a module only through a `use` there
//!   (`crate::Lifecycle`, with `pub use state::Lifecycle;` in lib.rs) leads, in as many
//!   hops as it takes, to the module that defines the item: that is the file a reader
//!   needs, not the root that lists it. A private `use` counts the same (a child can name
//!   it as `super::X`), or a parent's import would hide a circle between its children. A
//!   name the crate re-exports from another crate is no edge at all.
//! - A module may use what its ancestors define. The parent is its children's context:
//!   a child naming `super::Options` while the parent calls into the child is Rust's
//!   ordinary layering, and counting it would put every `mod.rs` and `lib.rs` in a circle
//!   with the files it declares, drowning the circles worth untangling. So an edge from a
//!   module to one of its ancestors is dropped; parent → descendant edges count, and so do
//!   edges between siblings and cousins, where a circle means two files that each need the
//!   other. Re-exports are followed first: a child naming its parent's re-export of a
//!   sibling's item depends on that sibling.
//!
//! Test code is left out (`#[cfg(test)]` items, inline modules and module files, and
//! `#[test]` functions): a test module leans on its parent by design. Inline `mod x { … }`
//! blocks count as their file's module. Paths inside macro invocations are found by
//! scanning their tokens for `a::b` runs, since syn cannot parse a macro's body in general.
//! A glob `use` binds no name this check knows: it is an edge to the glob's module only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Item, Meta, Token, UseTree};

mod workspace;

use workspace::{members, read, root};

// ---------------------------------------------------------------------------------------
// The module tree: which files a crate root reaches, and which logical module paths
// (`kind::pods`, or `cli` for an inline block) belong to which file.
// ---------------------------------------------------------------------------------------

/// One module file of a crate graph.
struct Module {
    /// Relative to the crate directory, e.g. `src/kind/pods.rs`.
    file: PathBuf,
    ast: syn::File,
    /// Its path from the crate root (`["kind", "pods"]`; empty for the root).
    logical: Vec<String>,
    /// The names its top-level `use` items bind, and the path each comes from (`None`:
    /// another crate's), so a reference to a re-export can reach where the item lives.
    imports: BTreeMap<String, Option<Vec<String>>>,
}

/// A crate graph: its module files, and every logical module path mapped to the file that
/// holds it (inline modules map to their enclosing file, which is what collapses them).
#[derive(Default)]
struct Tree {
    modules: Vec<Module>,
    by_path: BTreeMap<Vec<String>, usize>,
}

/// A `mod x;` found in a file, already resolved to the file that holds `x`.
struct Declared {
    logical: Vec<String>,
    file: PathBuf,
    /// Whether `x`'s own children live next to it (`mod.rs`, `#[path]` files) rather than
    /// in a directory named after it (`x.rs` → `x/`).
    owns_dir: bool,
}

/// Loads the module files reached from `root` (relative to `crate_dir`).
fn load_tree(crate_dir: &Path, root: &Path) -> Tree {
    let mut tree = Tree::default();
    add_file(&mut tree, crate_dir, Declared { logical: Vec::new(), file: root.to_path_buf(), owns_dir: true });
    // Imports resolve against the whole tree (a `use` may name a module declared later).
    let imports: Vec<_> = tree.modules.iter().map(|m| imports(&tree, m)).collect();
    for (module, imports) in tree.modules.iter_mut().zip(imports) {
        module.imports = imports;
    }
    tree
}

fn add_file(tree: &mut Tree, crate_dir: &Path, module: Declared) {
    let path = crate_dir.join(&module.file);
    let ast = syn::parse_file(&read(&path)).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let index = tree.modules.len();
    tree.by_path.insert(module.logical.clone(), index);
    // Rust's rule: a crate root's or `mod.rs`'s children sit beside it; `foo.rs`'s in `foo/`.
    let here = module.file.parent().unwrap_or(Path::new("")).to_path_buf();
    let children_dir = if module.owns_dir { here.clone() } else { here.join(module.file.file_stem().unwrap()) };
    let mut declared = Vec::new();
    let scope = Scope { crate_dir, logical: &module.logical, children_dir: &children_dir, path_base: &here, index };
    collect_mods(tree, &ast.items, &scope, &mut declared);
    tree.modules.push(Module { file: module.file, ast, logical: module.logical, imports: BTreeMap::new() });
    for child in declared {
        add_file(tree, crate_dir, child);
    }
}

/// Where `mod` declarations of one file, or of one inline block in it, are resolved.
struct Scope<'a> {
    crate_dir: &'a Path,
    logical: &'a [String],
    /// Where `mod x;` looks for `x.rs` or `x/mod.rs`.
    children_dir: &'a Path,
    /// What a `#[path = "…"]` is relative to (the file's directory outside inline blocks).
    path_base: &'a Path,
    /// The file these declarations are written in.
    index: usize,
}

/// Registers the inline modules among `items` as part of the file, and returns the
/// module files they declare. Test-only modules are left out, with all they contain.
fn collect_mods(tree: &mut Tree, items: &[Item], scope: &Scope, declared: &mut Vec<Declared>) {
    for item in items {
        let Item::Mod(m) = item else { continue };
        if is_test_only(&m.attrs) {
            continue;
        }
        let name = m.ident.unraw().to_string();
        let logical: Vec<String> = scope.logical.iter().cloned().chain([name.clone()]).collect();
        if let Some((_, content)) = &m.content {
            tree.by_path.insert(logical.clone(), scope.index);
            let dir = scope.children_dir.join(&name);
            let inner = Scope { logical: &logical, children_dir: &dir, path_base: &dir, ..*scope };
            collect_mods(tree, content, &inner, declared);
        } else if let Some(path) = path_attribute(&m.attrs) {
            declared.push(Declared { logical, file: scope.path_base.join(path), owns_dir: true });
        } else {
            let (file, owns_dir) = module_file(scope.crate_dir, scope.children_dir, &name);
            declared.push(Declared { logical, file, owns_dir });
        }
    }
}

/// `dir/name.rs` or `dir/name/mod.rs`, whichever exists.
fn module_file(crate_dir: &Path, dir: &Path, name: &str) -> (PathBuf, bool) {
    let flat = dir.join(format!("{name}.rs"));
    let nested = dir.join(name).join("mod.rs");
    if crate_dir.join(&flat).is_file() {
        (flat, false)
    } else if crate_dir.join(&nested).is_file() {
        (nested, true)
    } else {
        panic!("`mod {name};` in {}: neither {} nor {} exists", crate_dir.display(), flat.display(), nested.display())
    }
}

fn path_attribute(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find(|a| a.path().is_ident("path")).map(|a| match &a.meta {
        Meta::NameValue(nv) => match &nv.value {
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => s.value(),
            _ => panic!("#[path] without a string"),
        },
        _ => panic!("#[path] without a value"),
    })
}

/// `#[cfg(test)]`, `#[cfg(all(test, …))]`, `#[test]` or `#[tokio::test]`: code that only
/// exists in test builds, and so cannot make the shipped modules depend on each other.
fn is_test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        let last = a.path().segments.last().map(|s| s.ident.to_string());
        if last.as_deref() == Some("test") {
            return true;
        }
        if !a.path().is_ident("cfg") {
            return false;
        }
        match a.parse_args::<Meta>() {
            Ok(Meta::Path(p)) => p.is_ident("test"),
            Ok(Meta::List(l)) if l.path.is_ident("all") => l
                .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .is_ok_and(|all| all.iter().any(|m| m.path().is_ident("test"))),
            _ => false,
        }
    })
}

/// The names bound by `module`'s top-level (non-test) `use` items, with the absolute path
/// each comes from (`None`: another crate's item).
fn imports(tree: &Tree, module: &Module) -> BTreeMap<String, Option<Vec<String>>> {
    let defined: BTreeSet<String> = module.ast.items.iter().filter_map(item_name).collect();
    let mut out = BTreeMap::new();
    for item in &module.ast.items {
        let Item::Use(u) = item else { continue };
        if is_test_only(&u.attrs) {
            continue;
        }
        let mut leaves = Vec::new();
        use_leaves(&u.tree, Vec::new(), None, &mut leaves);
        for (path, bound) in leaves {
            let Some(bound) = bound else { continue };
            let path = names(&path);
            let origin = match absolute(tree, &module.logical, &path) {
                _ if u.leading_colon.is_some() => None,
                Some(origin) => Some(origin),
                // `use Kind::A` with `Kind` defined here: the item is this module's own.
                None if defined.contains(&path[0]) => continue,
                None => None,
            };
            out.insert(bound.unraw().to_string(), origin);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// References: every path a module file names, resolved to the module file it reaches.
// ---------------------------------------------------------------------------------------

/// Where a module names another: the example a failure shows.
#[derive(Clone, Debug)]
struct Reference {
    line: usize,
    text: String,
    /// When the path names a module that only re-exports the item: that module's file.
    /// The edge goes past it, to where the item is defined.
    via: Option<String>,
}

impl Reference {
    /// Which reference is the better example of an edge: a direct one before a re-export.
    fn rank(&self) -> (bool, usize) {
        (self.via.is_some(), self.line)
    }
}

/// Collects, for one module file, the module files its paths reach.
struct References<'a> {
    tree: &'a Tree,
    /// The logical module the visitor is in: the file's, plus any inline blocks entered.
    scope: Vec<String>,
    found: Vec<(usize, Reference)>,
}

impl References<'_> {
    /// Records `segments` (a path as written) if it reaches a module file of this crate.
    fn note(&mut self, segments: &[String], span: Span) {
        let Some(full) = absolute(self.tree, &self.scope, segments) else { return };
        let Some((target, via)) = resolve(self.tree, full) else { return };
        let via = via.map(|m| self.tree.modules[m].file.display().to_string());
        self.found.push((target, Reference { line: span.start().line, text: segments.join("::"), via }));
    }
}

/// The module file that defines what the absolute path `full` names, and the first module
/// file passed through because it only re-exported it; `None` when the name is another
/// crate's item that this crate re-exports (no module of this crate is needed to read it).
///
/// The path reaches its longest prefix that is a module (`a::Thing::new` reaches `a`).
/// While the next name is one of that module file's `use` bindings, the path is spelled out
/// again from where that `use` takes it (`crate::Thing` → `crate::c::Thing`): one hop per
/// re-export, and a re-exported module (`pub use x::y as z`) keeps the rest of the path.
fn resolve(tree: &Tree, mut full: Vec<String>) -> Option<(usize, Option<usize>)> {
    let mut via = None;
    // Valid Rust has no loop of re-exports; the bound only keeps a misreading finite.
    for _ in 0..16 {
        let n = module_prefix(tree, &full);
        let module = tree.by_path[&full[..n]];
        // Only a file's own top-level `use`s are known: a name in an inline block stops here.
        let file_level = tree.modules[module].logical == full[..n];
        match full.get(n).filter(|_| file_level).and_then(|name| tree.modules[module].imports.get(name)) {
            None => return Some((module, via)),
            Some(None) => return None,
            Some(Some(origin)) => {
                via.get_or_insert(module);
                full = [origin.as_slice(), &full[n + 1..]].concat();
            }
        }
    }
    Some((tree.by_path[&full[..module_prefix(tree, &full)]], via))
}

/// How many leading names of an absolute path form a module: its longest such prefix.
fn module_prefix(tree: &Tree, full: &[String]) -> usize {
    (0..=full.len()).rev().find(|&n| tree.by_path.contains_key(&full[..n])).expect("the root is a module")
}

/// The path from the crate root that `segments`, written in module `scope`, names; `None`
/// for a path into another crate (or a local name that is no module).
fn absolute(tree: &Tree, scope: &[String], segments: &[String]) -> Option<Vec<String>> {
    let first = segments.first()?.as_str();
    let (base, rest): (&[String], &[String]) = match first {
        "crate" => (&[], &segments[1..]),
        "self" => (scope, &segments[1..]),
        "super" => {
            let ups = segments.iter().take_while(|s| *s == "super").count();
            (scope.get(..scope.len().checked_sub(ups)?)?, &segments[ups..])
        }
        // A bare first segment is relative only when it names a child module in scope.
        _ if tree.by_path.contains_key(&[scope, &segments[..1]].concat()) => (scope, segments),
        _ => return None,
    };
    Some([base, rest].concat())
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_test_only(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(c) => &c.attrs,
            syn::ImplItem::Fn(f) => &f.attrs,
            syn::ImplItem::Type(t) => &t.attrs,
            syn::ImplItem::Macro(m) => &m.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !is_test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    /// An inline block's own paths are relative to it, but they count for the file.
    /// A `mod x;` declaration is no reference: only what the code names is.
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if let Some((_, content)) = &m.content {
            self.scope.push(m.ident.unraw().to_string());
            content.iter().for_each(|item| self.visit_item(item));
            self.scope.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_some() {
            return; // `use ::x` is always another crate
        }
        let mut leaves = Vec::new();
        use_leaves(&u.tree, Vec::new(), None, &mut leaves);
        for (leaf, _) in leaves {
            let span = leaf.last().map_or_else(Span::call_site, Ident::span);
            self.note(&names(&leaf), span);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        // One segment is a local name (`self`, `x`), never a module reached through.
        if path.leading_colon.is_none() && path.segments.len() >= 2 {
            let idents: Vec<Ident> = path.segments.iter().map(|s| s.ident.clone()).collect();
            self.note(&names(&idents), idents[0].span());
        }
        visit::visit_path(self, path);
    }

    /// `pub(super)` and `pub(in crate::a)` say who may look, not what this module uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        let mut runs = Vec::new();
        token_paths(mac.tokens.clone(), &mut runs);
        for run in runs {
            self.note(&names(&run), run[0].span());
        }
    }
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The name an item defines in its module's namespace (not `use`, `impl` or macro calls).
fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Mod(i) => &i.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.unraw().to_string())
}

fn names(idents: &[Ident]) -> Vec<String> {
    idents.iter().map(|i| i.unraw().to_string()).collect()
}

/// Each path a `use` brings in, spelled out, with the name it binds: `use crate::{a, b::c
/// as d}` → (`crate::a`, `a`), (`crate::b::c`, `d`). A glob names its prefix and binds
/// nothing (`use super::*` → `super`); a `self` leaf names its prefix and binds its last name.
fn use_leaves(tree: &UseTree, prefix: Vec<Ident>, last: Option<&Ident>, out: &mut Vec<(Vec<Ident>, Option<Ident>)>) {
    let with = |ident: &Ident| prefix.iter().cloned().chain([ident.clone()]).collect::<Vec<_>>();
    match tree {
        UseTree::Path(p) => use_leaves(&p.tree, with(&p.ident), Some(&p.ident), out),
        UseTree::Name(n) if n.ident == "self" => out.push((prefix.clone(), last.cloned())),
        UseTree::Name(n) => out.push((with(&n.ident), Some(n.ident.clone()))),
        UseTree::Rename(r) if r.ident == "self" => out.push((prefix.clone(), Some(r.rename.clone()))),
        UseTree::Rename(r) => out.push((with(&r.ident), Some(r.rename.clone()))),
        UseTree::Glob(_) => out.push((prefix.clone(), None)),
        UseTree::Group(g) => g.items.iter().for_each(|t| use_leaves(t, prefix.clone(), last, out)),
    }
}

/// The `a::b::c` runs of at least two names in a macro's tokens (and its nested groups).
/// A run after a leading `::` is another crate's and is dropped.
fn token_paths(tokens: TokenStream, out: &mut Vec<Vec<Ident>>) {
    let mut run = Run::default();
    let mut colons = 0;
    for token in tokens {
        match token {
            TokenTree::Ident(ident) if colons == 2 && !run.idents.is_empty() => run.idents.push(ident),
            TokenTree::Ident(ident) => {
                run.end(out);
                run = Run { idents: vec![ident], after_colons: colons == 2 };
            }
            TokenTree::Punct(p) if p.as_char() == ':' => {
                colons += 1;
                continue;
            }
            TokenTree::Group(g) => {
                run.end(out);
                token_paths(g.stream(), out);
            }
            TokenTree::Punct(_) | TokenTree::Literal(_) => run.end(out),
        }
        colons = 0;
    }
    run.end(out);
}

/// A run of names joined by `::` in a macro's tokens.
#[derive(Default)]
struct Run {
    idents: Vec<Ident>,
    /// Began right after `::` (`::std::x`, `<T as Tr>::f`): not one of this crate's paths.
    after_colons: bool,
}

impl Run {
    fn end(&mut self, out: &mut Vec<Vec<Ident>>) {
        let run = std::mem::take(self);
        if run.idents.len() >= 2 && !run.after_colons {
            out.push(run.idents);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The graph: edges between module files, and its strongly connected components.
// ---------------------------------------------------------------------------------------

/// For each edge `from → to` between module files, one example: the first reference that
/// names `to` directly, or only if there is none, the first that reaches it through a
/// re-export. A reference from a module to one of its ancestors is no edge.
fn edges(tree: &Tree) -> BTreeMap<(usize, usize), Reference> {
    let mut out: BTreeMap<(usize, usize), Reference> = BTreeMap::new();
    for (from, module) in tree.modules.iter().enumerate() {
        let mut refs = References { tree, scope: module.logical.clone(), found: Vec::new() };
        refs.visit_file(&module.ast);
        let ancestor = |to: usize| module.logical.starts_with(&tree.modules[to].logical);
        for (to, reference) in refs.found.into_iter().filter(|&(to, _)| to != from && !ancestor(to)) {
            let example = out.entry((from, to)).or_insert_with(|| reference.clone());
            if reference.rank() < example.rank() {
                *example = reference;
            }
        }
    }
    out
}

/// Tarjan's algorithm: the strongly connected components of a graph on `0..n`.
struct Tarjan<'a> {
    next: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    components: Vec<Vec<usize>>,
}

fn strongly_connected(n: usize, edges: impl Iterator<Item = (usize, usize)>) -> Vec<Vec<usize>> {
    let mut next = vec![Vec::new(); n];
    edges.for_each(|(a, b)| next[a].push(b));
    let mut t = Tarjan {
        next: &next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.components
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        let next = self.next;
        for &w in &next[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// One import circle: its module files (sorted) and, per edge inside it, an example.
#[derive(Debug)]
struct Cycle {
    files: Vec<String>,
    /// `(from, to, reference in from)`.
    edges: Vec<(String, String, Reference)>,
}

/// The import circles of the crate graph rooted at `root` (relative to `crate_dir`).
fn crate_cycles(crate_dir: &Path, root: &Path) -> Vec<Cycle> {
    let tree = load_tree(crate_dir, root);
    let edges = edges(&tree);
    let file = |i: usize| tree.modules[i].file.display().to_string();
    let mut cycles: Vec<Cycle> = strongly_connected(tree.modules.len(), edges.keys().copied())
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|component| {
            let members: BTreeSet<usize> = component.into_iter().collect();
            let inside = edges.iter().filter(|((a, b), _)| members.contains(a) && members.contains(b));
            let mut files: Vec<String> = members.iter().map(|&i| file(i)).collect();
            files.sort();
            let mut edges: Vec<_> = inside.map(|((a, b), r)| (file(*a), file(*b), r.clone())).collect();
            edges.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            Cycle { files, edges }
        })
        .collect();
    cycles.sort_by(|a, b| a.files.cmp(&b.files));
    cycles
}

/// The crate roots of a package: `src/lib.rs`, `src/main.rs`, `src/bin/*.rs` that exist.
fn crate_roots(crate_dir: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> =
        ["src/lib.rs", "src/main.rs"].map(PathBuf::from).into_iter().filter(|r| crate_dir.join(r).is_file()).collect();
    if let Ok(bins) = std::fs::read_dir(crate_dir.join("src/bin")) {
        let mut bins: Vec<PathBuf> = bins
            .map(|e| e.expect("listing src/bin").path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .map(|p| Path::new("src/bin").join(p.file_name().unwrap()))
            .collect();
        bins.sort();
        roots.extend(bins);
    }
    roots
}

/// `crate (root): a.rs ↔ b.rs`, then one line per edge with the file:line that makes it.
fn describe(label: &str, cycle: &Cycle) -> String {
    let mut out = format!("{label}: {}", cycle.files.join(" ↔ "));
    for (from, to, r) in &cycle.edges {
        out.push_str(&format!("\n    {from} → {to}: {from}:{} `{}`", r.line, r.text));
        if let Some(via) = &r.via {
            out.push_str(&format!(" (through the re-export in {via})"));
        }
    }
    out
}

#[test]
fn no_crate_has_a_module_import_cycle() {
    let root = root();
    let mut found = Vec::new();
    for member in members(&read(&root.join("Cargo.toml"))) {
        let crate_dir = root.join(&member);
        let roots = crate_roots(&crate_dir);
        assert!(!roots.is_empty(), "{member} has no src/lib.rs, src/main.rs or src/bin/*.rs");
        for crate_root in roots {
            let label = format!("{member} ({})", crate_root.display());
            found.extend(crate_cycles(&crate_dir, &crate_root).iter().map(|c| describe(&label, c)));
        }
    }
    assert!(
        found.is_empty(),
        "{} module import cycle(s); move what both sides need into a module of its own:\n\n{}",
        found.len(),
        found.join("\n\n")
    );
}

/// A temporary directory removed when dropped, even if the test panics first.
struct TempDir(PathBuf);

impl TempDir {
    fn new(files: &[(&str, &str)]) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("zerodrop-tidy-cycles-{}-{nanos}", std::process::id()));
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_detector_finds_exactly_the_known_cycles() {
    let dir = TempDir::new(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\nmod x;\nmod y;\npub use {c::Thing, d::G, y::Y};\n"),
        // A plain cycle: a names b through `crate::`, b names a through `super::` in a macro.
        ("src/a.rs", "pub fn f() {\n    crate::b::g();\n}\n"),
        ("src/b.rs", "pub fn g() {\n    println!(\"{}\", super::a::X);\n}\n"),
        // Acyclic: inside c, an inline block's `super::` is c itself, and test code (an item,
        // a module file) does not count.
        (
            "src/c.rs",
            "pub struct Thing;\nmod inner {\n    use super::Thing;\n}\n\
             #[cfg(test)]\nmod tests;\n#[cfg(test)]\nfn h() {\n    tests::h();\n}\n",
        ),
        ("src/c/tests.rs", "use super::*;\n"),
        // d calls its child e, and e uses d's `Ctx`: a child → parent use, no cycle. d also
        // re-exports e's `F` (so `crate::G` is two hops from e) and another crate's trait.
        (
            "src/d/mod.rs",
            "mod e;\npub use self::e::{E, F as G};\npub use std::fmt::Debug as Dbg;\n\
             pub struct Ctx;\npub fn run() {\n    e::new(&Ctx);\n}\n",
        ),
        (
            "src/d/e.rs",
            "use crate::c;\npub struct E(c::Thing);\n#[derive(Default)]\npub struct F;\n\
             pub fn new(_: &super::Ctx) -> crate::Thing {\n    c::Thing\n}\n",
        ),
        // A cycle closed only through a re-export: x names `crate::Y`, which lib.rs takes
        // from y, and y calls x. x also names `crate::G` (defined in d/e.rs) and `d::Dbg`.
        (
            "src/x.rs",
            "pub fn f(_: &dyn crate::d::Dbg) -> crate::Y {\n    crate::Y\n}\n\
             pub fn g() -> crate::G {\n    crate::G::default()\n}\n",
        ),
        ("src/y.rs", "pub struct Y;\npub fn y() {\n    super::x::f(&1);\n}\n"),
    ]);
    let cycles = crate_cycles(&dir.0, Path::new("src/lib.rs"));
    let files: Vec<&[String]> = cycles.iter().map(|c| c.files.as_slice()).collect();
    assert_eq!(files, [["src/a.rs", "src/b.rs"], ["src/x.rs", "src/y.rs"]], "{cycles:#?}");
    let examples: Vec<(&str, usize, &str, Option<&str>)> = cycles
        .iter()
        .flat_map(|c| &c.edges)
        .map(|(from, _, r)| (from.as_str(), r.line, r.text.as_str(), r.via.as_deref()))
        .collect();
    assert_eq!(
        examples,
        [
            ("src/a.rs", 2, "crate::b::g", None),
            ("src/b.rs", 2, "super::a::X", None),
            ("src/x.rs", 1, "crate::Y", Some("src/lib.rs")),
            ("src/y.rs", 3, "super::x::f", None),
        ]
    );

    // Every edge of the crate: none to an ancestor (lib.rs, or e → d), none for `d::Dbg`
    // (another crate's), and `G` reaches d/e.rs through lib.rs and d/mod.rs, from x and
    // from lib.rs's own `use`.
    let tree = load_tree(&dir.0, Path::new("src/lib.rs"));
    let file = |i: usize| tree.modules[i].file.to_str().unwrap();
    let edges = edges(&tree);
    let mut all: Vec<(&str, &str, &str)> =
        edges.iter().map(|((from, to), r)| (file(*from), file(*to), r.text.as_str())).collect();
    all.sort();
    assert_eq!(
        all,
        [
            ("src/a.rs", "src/b.rs", "crate::b::g"),
            ("src/b.rs", "src/a.rs", "super::a::X"),
            ("src/d/e.rs", "src/c.rs", "crate::c"),
            ("src/d/mod.rs", "src/d/e.rs", "self::e::E"),
            ("src/lib.rs", "src/c.rs", "c::Thing"),
            ("src/lib.rs", "src/d/e.rs", "d::G"),
            ("src/lib.rs", "src/y.rs", "y::Y"),
            ("src/x.rs", "src/d/e.rs", "crate::G"),
            ("src/x.rs", "src/y.rs", "crate::Y"),
            ("src/y.rs", "src/x.rs", "super::x::f"),
        ]
    );
}
