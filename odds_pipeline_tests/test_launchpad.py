"""What the Launchpad shows is pre-filled and valid as opened (a user's report: it was not)."""

import dagster as dg
import yaml

from odds_pipeline.definitions import defs


def _op_config_fields() -> dict[str, dict]:
    out = {}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets_def = node.assets_def
        for op in [assets_def.op] if assets_def.is_executable else []:
            schema = op.config_schema
            if schema is None or schema.as_field().config_type.kind.name != "STRICT_SHAPE":
                continue
            out[op.name] = schema.as_field().config_type.fields
    return out


def test_every_config_field_of_every_asset_is_prefilled():
    missing = [
        f"{op}.{name}"
        for op, fields in _op_config_fields().items()
        for name, field in fields.items()
        if not field.is_required and not field.default_provided
    ]
    assert missing == [], f"fields the Launchpad would show empty: {missing}"


def test_the_launchpad_yaml_of_football_data_odds_is_valid_as_opened():
    """The UI writes `default_kickoff_time: 15:00` unquoted; YAML 1.1 reads that as 900."""
    fields = _op_config_fields()["football_data_odds"]
    defaults = {name: f.default_value for name, f in fields.items() if f.default_provided}
    as_opened = yaml.safe_dump(defaults).replace("'15:00'", "15:00")  # the UI's YAML 1.2
    config = yaml.safe_load(as_opened)
    assert config["default_kickoff_time"] == 900  # what the server receives
    job = defs.resolve_implicit_global_asset_job_def()
    result = dg.validate_run_config(
        job.get_subset(asset_selection={dg.AssetKey("football_data_odds")}),
        {"ops": {"football_data_odds": {"config": config}}},
    )
    assert result["ops"]["football_data_odds"]["config"]["default_kickoff_time"] in (900, "15:00")
    from odds_pipeline.defs.ingestion import FootballDataConfig

    assert FootballDataConfig(**config).default_kickoff_time == "15:00"
