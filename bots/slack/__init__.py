"""Slack Socket Mode bot: answers @-mentions and direct messages with the model's thinking and answer."""
