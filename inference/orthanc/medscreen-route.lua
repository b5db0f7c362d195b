-- Orthanc auto-routing to medscreen: forward what modalities produce, never medscreen's own results
-- (its SR and heat-map, Manufacturer "medscreen") and nothing this script sent, so nothing loops.
function OnStoredInstance(instanceId, tags, metadata, origin)
  local wanted = { CT = true, MG = true, DX = true, CR = true }
  if origin['RequestOrigin'] ~= 'Lua' and tags['Manufacturer'] ~= 'medscreen' and wanted[tags['Modality']] then
    SendToModality(instanceId, 'medscreen')
  end
end
