"""The import graph flows one way (docs/architecture.md): no protege module reaches itself through its imports.

grimp's graph counts every import — lazy ones inside functions and `if TYPE_CHECKING:` ones too — so a part that
names the facade even for a type annotation is a cycle here. `lint-imports` checks the layers themselves."""

import grimp


def import_cycles(package: str = "protege") -> list[tuple[str, str]]:
    """Each pair of modules where one imports the other directly and the other reaches the first back."""
    graph = grimp.build_graph(package)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.add(tuple(sorted((module, imported))))
    return sorted(cycles)


def test_no_module_imports_itself_back():
    cycles = import_cycles()
    assert not cycles, f"{len(cycles)} import cycles among protege's modules:\n" + "\n".join(
        f"  {a} <-> {b}" for a, b in cycles
    )
