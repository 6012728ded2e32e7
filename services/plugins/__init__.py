"""The plugin service: twelve kinds of pluggable components around each chat turn, from plugins.yaml."""
