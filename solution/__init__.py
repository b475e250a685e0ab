"""The score card shipped as a Dataverse solution: its web resources and the packaging script."""
