from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "bots" / "manifest.yaml"


def test_manifest_turns_on_socket_mode_with_the_scopes_and_events_the_bot_uses():
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read",
        "chat:write",
        "channels:history",
        "groups:history",
        "im:history",
        "im:read",
        "im:write",
    }
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {"app_mention", "message.im"}
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
