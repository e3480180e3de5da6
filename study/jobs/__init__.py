"""The jobs of the command line, each a function of the parsed `Study` (and, where it fans out, an
`Executor`) that returns a summary: `run` (train and measure what is missing), `measure`
(measures of stored networks from their checkpoints), `score` (a user's function on every
stored network, for `analysis score`), `status` (what is stored, as data) and `migrate`.

A job that fans out gives `executor.fan_out` its items, a task (a module-level function of plain
arguments doing one network's work through `study.runner`, in a Ray worker or this process), a
``record`` that counts the tasks' records and returns what the progress bar shows, and its
summary, an `executor.Ended`. A new job is a module here, which `study.cli` calls and prints::

    @dataclass(kw_only=True)
    class Sizes(Ended):
        of: dict[str, int] = field(default_factory=dict)

    def size_one(spec: RunSpec, out: str) -> tuple[str, int]:  # the task: one stored network
        model, *_ = runner.stored_network(Store(out, spec.study), spec)
        return spec.run_id, sum(p.numel() for p in model.parameters())

    def sizes(study: Study, executor: Executor = Executor()) -> Sizes:
        s = Sizes()
        def record(done):
            s.of[done[0]] = done[1]
            return {"sized": len(s.of)}
        return fan_out(study.runs(), size_one, lambda spec: (spec, study.out), study.resources,
                       record, executor, bar=Bar(f"{study.name} size", study.size), ended=s)
"""
