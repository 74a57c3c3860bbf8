"""Registry dtypes int8 and int4: weight-only quantized layers on CPU (inference.quant)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('models_api', '0003_default_rows_remote_code_off'),
    ]

    operations = [
        migrations.AlterField(
            model_name='modelentry',
            name='dtype',
            field=models.CharField(choices=[('auto', 'auto (fastest correct dtype for the device)'), ('float32', 'float32'), ('bfloat16', 'bfloat16'), ('float16', 'float16'), ('int8', "int8 weights (CPU, text generation): about 1/4 of float32's memory"), ('int4', "int4 weights (CPU, text generation): about 1/7 of float32's memory")], default='auto', max_length=16),
        ),
    ]
