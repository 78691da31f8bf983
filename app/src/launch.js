// SMART App Launch entry point (/app/launch.html). Three ways in, all handled by fhirclient:
//   EHR launch          ?iss=<FHIR base>&launch=<opaque>   scopes: launch + patient/*.read ...
//   standalone launch   ?iss=<FHIR base>                   scopes: launch/patient (EHR picks one)
//   open server (dev)   ?fhirServiceUrl=<FHIR base>&patientId=<id>   no authorisation at all
// Then fhirclient sends the browser on to index.html, where timeline.js takes over.
import FHIR from 'fhirclient';

const status = document.getElementById('status');

function fail(message) {
  status.textContent = message;
  status.className = 'problem';
  status.setAttribute('role', 'alert');
}

async function main() {
  const params = new URLSearchParams(window.location.search);
  if (!params.get('iss') && !params.get('fhirServiceUrl')) {
    fail('This page is opened by the EHR (with iss and launch parameters), or for development '
      + 'with ?fhirServiceUrl=<FHIR base URL>&patientId=<id>. Neither was given.');
    return;
  }
  const response = await fetch('api/config', { headers: { Accept: 'application/json' } });
  if (!response.ok) throw new Error(`configuration unavailable (HTTP ${response.status})`);
  const config = await response.json();
  await FHIR.oauth2.authorize({
    clientId: config.clientId,
    scope: params.get('launch') ? config.ehrLaunchScope : config.standaloneLaunchScope,
    redirectUri: 'index.html',
    pkceMode: 'ifSupported',
  });
}

main().catch((error) => fail(`The timeline could not be launched: ${error.message}`));
